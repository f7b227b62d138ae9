"""Per-session observation: AgentSession, RealtimeSession and room events -> metrics,
logs and spans. The decisions (turn latency, outcome) are pure and tested alone."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc
from livekit.agents import llm
from livekit.agents.metrics import RealtimeModelMetrics
from livekit.agents.voice import AgentSession
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    UserStateChangedEvent,
)

from .metrics import WorkerMetrics

log = logging.getLogger("voicefleet.worker.session")

CLIENT_INITIATED = rtc.DisconnectReason.CLIENT_INITIATED


def session_outcome(close_reason: str, caller_disconnect_reason: int | None) -> str:
    """The `sessions_ended_total{outcome}` for an AgentSession close reason.

    completed: the agent ended it, the job was shut down, or the caller hung up;
    caller_gone: the caller's connection was lost (not a hang-up); error: the session
    failed. (drain_timeout is decided by the drain, not here.)
    """
    if close_reason == "error":
        return "error"
    if close_reason == "participant_disconnected":
        if caller_disconnect_reason in (None, CLIENT_INITIATED):
            return "completed"
        return "caller_gone"
    return "completed"


def caller_origin(kind: int) -> str | None:
    """How a participant came in, for voicefleet_worker_callers_total; None for agents."""
    if kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
        return None
    if kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
        return "sip"
    if kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD:
        return "webrtc"
    return "other"


@dataclass
class TurnTimer:
    """Turn latency: the caller stopped speaking (the model's VAD) -> first agent audio;
    and interruptions: the agent's audio stops while the caller is speaking.

    Only a speaking start that follows a caller's stop counts (an agent's greeting or a
    second answer to the same turn has no turn latency).
    """

    user_stopped_at: float | None = None
    agent_speaking: bool = False
    user_speaking: bool = False

    def user_stopped(self, at: float) -> None:
        self.user_speaking = False
        self.user_stopped_at = at

    def user_started(self) -> None:
        self.user_speaking = True
        self.user_stopped_at = None

    def agent_started(self, at: float) -> float | None:
        self.agent_speaking = True
        stopped, self.user_stopped_at = self.user_stopped_at, None
        if stopped is None or at < stopped:
            return None
        return at - stopped

    def agent_stopped(self) -> bool:
        """The agent stopped speaking; True when it was cut short by the caller (the
        caller is speaking as the agent's audio stops)."""
        was, self.agent_speaking = self.agent_speaking, False
        return was and self.user_speaking


@dataclass
class SessionObserver:
    """Wires one session's events to the worker's metrics. Thread-safe enough: each job's
    events arrive on that job's own event loop; the metrics are thread-safe."""

    metrics: WorkerMetrics
    job_id: str
    room: str
    log_transcripts: bool = False
    received_at: float = 0.0  # the job offer reached the worker (unix seconds)
    on_ready: Any = None  # callable() when the agent is ready in the room
    on_close: Any = None  # callable(outcome) when the session closes
    on_turn: Any = None  # callable(role, text) for each conversation message (the summary)
    turns: TurnTimer = field(default_factory=TurnTimer)
    ready_at: float | None = None
    caller_disconnect_reason: int | None = None
    close_reason: str | None = None  # livekit-agents' CloseReason, once the session closed
    room_left_reason: Any = None  # the room's DisconnectReason, once the agent left it
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _caller_counted: bool = False

    def _extra(self, **kw: Any) -> dict[str, Any]:
        return {"job_id": self.job_id, "room": self.room, **kw}

    # --- AgentSession --------------------------------------------------------------
    def attach_session(self, session: AgentSession[Any]) -> None:
        session.on("agent_state_changed", self._on_agent_state)
        session.on("user_state_changed", self._on_user_state)
        session.on("conversation_item_added", self._on_item)
        session.on("close", self._on_close)
        session.on("error", self._on_session_error)

    def _on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        if self.ready_at is None and ev.new_state in ("listening", "thinking", "speaking"):
            self.ready_at = ev.created_at
            if self.received_at > 0:
                self.metrics.dispatch_latency.observe(max(0.0, ev.created_at - self.received_at))
            if self.on_ready is not None:
                self.on_ready()
        if ev.new_state == "speaking":
            latency = self.turns.agent_started(ev.created_at)
            if latency is not None:
                self.metrics.turn_latency.observe(latency)
                log.info("turn", extra=self._extra(turn_latency=round(latency, 4)))
        elif ev.old_state == "speaking" and self.turns.agent_stopped():
            self.metrics.interruptions.inc()
            log.info("interrupted by the caller", extra=self._extra())

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "speaking":
            self.turns.user_started()
        elif ev.old_state == "speaking" and ev.new_state == "listening":
            self.turns.user_stopped(ev.created_at)

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage):
            return
        if self.on_turn is not None:
            try:
                self.on_turn(item.role, item.text_content or "")
            except Exception:
                log.exception("conversation summary update failed", extra=self._extra())
        if self.log_transcripts:
            log.info(
                "transcript",
                extra=self._extra(role=item.role, text=item.text_content or ""),
            )

    def _on_session_error(self, ev: ErrorEvent) -> None:
        # An unrecoverable error closes the AgentSession, but livekit-agents 1.8.9 may
        # raise out of that close (the Realtime connection error again) and never emit
        # `close`: end the session here so the job does not linger with a dead model.
        if getattr(ev.error, "recoverable", True) is False:
            log.error("session failed", extra=self._extra(error=str(ev.error)[:300]))
            if self.on_close is not None:
                self.on_close("error")

    def _on_close(self, ev: CloseEvent) -> None:
        reason = ev.reason.value if hasattr(ev.reason, "value") else str(ev.reason)
        self.close_reason = reason
        outcome = session_outcome(reason, self.caller_disconnect_reason)
        log.info("session closed", extra=self._extra(reason=reason, outcome=outcome))
        if self.on_close is not None:
            self.on_close(outcome)

    # --- RealtimeSession -----------------------------------------------------------
    def attach_realtime(self, rt: llm.RealtimeSession[Any]) -> None:
        rt.on("session_reconnected", self._on_rt_reconnected)
        rt.on("error", self._on_rt_error)
        rt.on("metrics_collected", self._on_rt_metrics)

    def _on_rt_reconnected(self, _: Any) -> None:
        self.metrics.reconnections.labels(link="realtime").inc()
        log.warning("realtime connection re-established", extra=self._extra())

    def _on_rt_error(self, ev: llm.RealtimeModelError) -> None:
        self.metrics.model_errors.labels(recoverable=str(bool(ev.recoverable)).lower()).inc()
        log.warning(
            "realtime model error",
            extra=self._extra(recoverable=ev.recoverable, error=str(ev.error)[:300]),
        )

    def _on_rt_metrics(self, m: Any) -> None:
        if isinstance(m, RealtimeModelMetrics) and m.ttft >= 0 and not m.cancelled:
            self.metrics.first_audio.observe(m.ttft)

    # --- room ----------------------------------------------------------------------
    def attach_room(self, room: rtc.Room) -> None:
        room.on("reconnected", self._on_room_reconnected)
        room.on("disconnected", self._on_room_disconnected)
        room.on("participant_disconnected", self._on_participant_disconnected)
        # The caller: one already in the room when the agent connects, or the first to join.
        room.on("participant_connected", self._count_caller)
        room.on("connection_state_changed", lambda state: self._count_present(room, state))

    def _count_present(self, room: rtc.Room, state: int) -> None:
        if state == rtc.ConnectionState.CONN_CONNECTED:
            for p in list(room.remote_participants.values()):
                self._count_caller(p)

    def _count_caller(self, p: rtc.RemoteParticipant) -> None:
        origin = caller_origin(p.kind)
        if origin is not None and not self._caller_counted:
            self._caller_counted = True
            self.metrics.callers.labels(origin=origin).inc()

    def _on_room_disconnected(self, reason: Any = None) -> None:
        self.room_left_reason = reason

    @property
    def removed(self) -> bool:
        """The agent was removed from the room (RemoveParticipant: the operator's failover
        or a later agent of the same call), not hung up on: the call goes on without it."""
        return bool(self.room_left_reason == rtc.DisconnectReason.PARTICIPANT_REMOVED)

    def _on_room_reconnected(self, *_: Any) -> None:
        self.metrics.reconnections.labels(link="room").inc()
        log.warning("room connection re-established", extra=self._extra())

    def _on_participant_disconnected(self, p: rtc.RemoteParticipant) -> None:
        if p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.caller_disconnect_reason = p.disconnect_reason
