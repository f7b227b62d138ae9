"""Pure decisions behind the session metrics: turn latency and the session outcome."""

from __future__ import annotations

import logging

import pytest
from livekit import rtc
from livekit.agents import llm
from livekit.agents.voice.events import ConversationItemAddedEvent

from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.observe import SessionObserver, TurnTimer, session_outcome


def test_turn_latency_from_user_stop_to_agent_audio() -> None:
    t = TurnTimer()
    assert t.agent_started(1.0) is None  # a greeting: no turn yet
    t.agent_stopped()
    t.user_started()
    t.user_stopped(10.0)
    assert t.agent_started(10.5) == 0.5
    t.agent_stopped()
    assert t.agent_started(12.0) is None  # the same turn answered again: not counted


def test_user_speaking_again_resets_the_turn() -> None:
    t = TurnTimer()
    t.user_stopped(5.0)
    t.user_started()
    assert t.agent_started(6.0) is None
    t.user_stopped(7.0)
    assert t.agent_started(6.5) is None  # clock skew: never negative


def test_outcomes() -> None:
    assert session_outcome("error", None) == "error"
    assert session_outcome("user_initiated", None) == "completed"
    assert session_outcome("job_shutdown", None) == "completed"
    assert (
        session_outcome("participant_disconnected", rtc.DisconnectReason.CLIENT_INITIATED)
        == "completed"
    )
    assert session_outcome("participant_disconnected", None) == "completed"
    assert (
        session_outcome("participant_disconnected", rtc.DisconnectReason.SIGNAL_CLOSE)
        == "caller_gone"
    )
    assert (
        session_outcome("participant_disconnected", rtc.DisconnectReason.ROOM_DELETED)
        == "caller_gone"
    )


def test_interruption_is_the_agent_stopping_while_the_caller_speaks() -> None:
    t = TurnTimer()
    t.agent_started(1.0)
    assert t.agent_stopped() is False  # the answer ended on its own
    t.agent_started(2.0)
    t.user_started()  # the caller talks over it
    assert t.agent_stopped() is True  # and the answer is cut short
    t.user_stopped(3.0)
    t.agent_started(3.5)
    t.user_started()
    t.user_stopped(3.8)  # a cough during the answer, which goes on
    assert t.agent_stopped() is False


def test_transcripts_logged_only_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    for enabled in (False, True):
        caplog.clear()
        obs = SessionObserver(WorkerMetrics(), "job", "room", log_transcripts=enabled)
        item = llm.ChatMessage(role="user", content=["my card number is 1234"])
        with caplog.at_level(logging.INFO, logger="voicefleet.worker.session"):
            obs._on_item(ConversationItemAddedEvent(item=item))
        logged = any("1234" in str(getattr(r, "text", "")) for r in caplog.records)
        assert logged is enabled
