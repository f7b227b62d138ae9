"""The sessions this worker serves now: one thread-safe registry behind `/sessions`, the
session gauges and the drain outcome bookkeeping, in the worker process (job processes
report to it through job_link.py). Every change to what `report()`
returns wakes the `/sessions` long polls (`changes`), from whichever thread made it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from voicefleet_contract.sessions import ChangeNotifier, RoomSession, SessionsReport

from .metrics import WorkerMetrics


@dataclass(frozen=True)
class Session:
    job_id: str
    room: str
    participant: str = ""
    started_at: float = 0.0  # unix seconds: the job started, then the agent joined


class SessionSink(Protocol):
    """Where a job reports its session: the registry itself (a job thread), or the link to
    the worker process that holds it (a job process, job_link.RemoteSessions)."""

    def start(self, job_id: str, room: str, participant: str = "") -> object: ...
    def joined(self, job_id: str) -> None: ...
    def end(self, job_id: str, outcome: str) -> object: ...


class SessionRegistry:
    def __init__(self, capacity: int, metrics: WorkerMetrics) -> None:
        self.capacity = capacity
        self.metrics = metrics
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._draining = False
        self.changes = ChangeNotifier()  # notified whenever report() may have changed
        metrics.capacity.set(capacity)
        metrics.active_sessions.set(0)
        metrics.draining.set(0)

    def start(self, job_id: str, room: str, participant: str = "") -> Session:
        s = Session(job_id=job_id, room=room, participant=participant, started_at=time.time())
        with self._lock:
            self._sessions[job_id] = s
            self.metrics.active_sessions.set(len(self._sessions))
        self.changes.notify()
        self.metrics.sessions_started.inc()
        return s

    def update(
        self, job_id: str, *, participant: str | None = None, started_at: float | None = None
    ) -> None:
        with self._lock:
            s = self._sessions.get(job_id)
            if s is None:
                return
            if participant is not None:
                s = replace(s, participant=participant)
            if started_at is not None:
                s = replace(s, started_at=started_at)
            self._sessions[job_id] = s
        self.changes.notify()

    def joined(self, job_id: str) -> None:
        """The agent is ready in the room: the session's duration counts from here."""
        self.update(job_id, started_at=time.time())

    def end(self, job_id: str, outcome: str) -> Session | None:
        """Record a session's end once; later calls for the same job are no-ops."""
        with self._lock:
            s = self._sessions.pop(job_id, None)
            self.metrics.active_sessions.set(len(self._sessions))
        if s is not None:
            self.changes.notify()
            self.metrics.sessions_ended.labels(outcome=outcome).inc()
            self.metrics.session_duration.observe(max(0.0, time.time() - s.started_at))
        return s

    def end_all(self, outcome: str) -> int:
        with self._lock:
            ids = list(self._sessions)
        return sum(1 for j in ids if self.end(j, outcome) is not None)

    def set_draining(self) -> None:
        with self._lock:
            self._draining = True
        self.metrics.draining.set(1)
        self.changes.notify()

    @property
    def draining(self) -> bool:
        with self._lock:
            return self._draining

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def report(self) -> SessionsReport:
        with self._lock:
            rooms = tuple(
                RoomSession(
                    room=s.room, jobId=s.job_id, startedAt=s.started_at, participant=s.participant
                )
                for s in sorted(self._sessions.values(), key=lambda s: s.started_at)
            )
            return SessionsReport(
                activeSessions=len(rooms),
                capacity=self.capacity,
                draining=self._draining,
                rooms=rooms,
            )


class JobEnd:
    """How one job leaves `/sessions`: only once its agent has left the room.

    The operator's failover reads `/sessions` every second: a room that vanishes from a
    live worker while the agent is still in the LiveKit room is taken for a crashed job
    after a 3 s grace (docs/failover.md). So a session that closes (caller gone, model
    failed, entrypoint error) only records its outcome (`closing`); the room is removed
    when the job's shutdown callback runs (`left`), which livekit-agents calls after
    disconnecting from the room.
    """

    def __init__(
        self,
        registry: SessionSink,
        job_id: str,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.job_id = job_id
        self.on_end = on_end
        self.outcome: str | None = None
        self.done = False

    def closing(self, outcome: str) -> None:
        """The session is over; the agent is about to leave. The first outcome wins."""
        if self.outcome is None:
            self.outcome = outcome

    def left(self) -> None:
        """The agent has left the room: the session ends with its recorded outcome."""
        if self.done:
            return
        self.done = True
        outcome = self.outcome or "completed"
        self.registry.end(self.job_id, outcome)
        if self.on_end is not None:
            self.on_end(outcome)
