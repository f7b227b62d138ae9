"""voicefleet_worker_callers_total: how a session's caller came in, from its participant kind."""

from __future__ import annotations

import pytest
from livekit import rtc

from voicefleet_worker.observe import caller_origin

K = rtc.ParticipantKind


@pytest.mark.parametrize(
    ("kind", "origin"),
    [
        (K.PARTICIPANT_KIND_SIP, "sip"),
        (K.PARTICIPANT_KIND_STANDARD, "webrtc"),
        (K.PARTICIPANT_KIND_INGRESS, "other"),
        (K.PARTICIPANT_KIND_AGENT, None),  # another agent is not the caller
    ],
)
def test_origin_of_a_participant(kind: int, origin: str | None) -> None:
    assert caller_origin(kind) == origin
