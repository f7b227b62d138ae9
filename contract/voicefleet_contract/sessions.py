"""The `/sessions` report a worker serves on its metrics port, read every second by the
operator's autoscaler and failover. One format, parsed by both sides from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

SESSIONS_PATH: Final = "/sessions"


@dataclass(frozen=True)
class RoomSession:
    room: str
    jobId: str
    startedAt: float = 0.0  # unix seconds
    participant: str = ""  # the agent's participant identity in the room


@dataclass(frozen=True)
class SessionsReport:
    activeSessions: int
    capacity: int
    draining: bool = False
    rooms: tuple[RoomSession, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_sessions(data: Any) -> SessionsReport:
    """Validate a `/sessions` body; raise ValueError on anything malformed."""
    if not isinstance(data, dict):
        raise ValueError("sessions report must be an object")
    active, capacity = data.get("activeSessions"), data.get("capacity")
    if not isinstance(active, int) or isinstance(active, bool) or active < 0:
        raise ValueError("activeSessions must be a non-negative integer")
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
        raise ValueError("capacity must be a non-negative integer")
    rooms = []
    for r in data.get("rooms") or []:
        if not isinstance(r, dict) or not isinstance(r.get("room"), str):
            raise ValueError("rooms[] entries need a room name")
        rooms.append(
            RoomSession(
                room=r["room"],
                jobId=str(r.get("jobId", "")),
                startedAt=float(r.get("startedAt") or 0.0),
                participant=str(r.get("participant", "")),
            )
        )
    return SessionsReport(active, capacity, bool(data.get("draining", False)), tuple(rooms))
