"""Pure decisions behind the session metrics: turn latency and the session outcome."""

from __future__ import annotations

from livekit import rtc

from voicefleet_worker.observe import TurnTimer, session_outcome


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
