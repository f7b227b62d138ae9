"""A scenario: one test's own settings, counters and open connections on the stand-in.

Scenarios are named by the URL a client connects to (`/s/<name>/v1/realtime` or
`?scenario=<name>`; otherwise `default`), so tests sharing one stand-in never see each
other's faults or counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .settings import Settings, ToolCall


class Droppable(Protocol):
    async def drop(self, mode: str) -> None: ...

    async def send_error(self, type_: str, code: str, message: str) -> None: ...


@dataclass
class Stats:
    connections_total: int = 0
    connections_current: int = 0
    sessions: int = 0  # connections that sent a session.update
    session_updates: int = 0
    reconnects: int = 0  # connections opened after a drop the stand-in caused
    drops: int = 0
    refused: int = 0
    responses_created: int = 0
    responses_completed: int = 0
    responses_cancelled: int = 0  # interruptions (turn detected) and response.cancel
    responses_failed: int = 0
    speech_started: int = 0
    speech_stopped: int = 0
    audio_in_ms: float = 0.0
    audio_out_ms: float = 0.0
    errors_sent: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)  # the last 50 sent
    function_calls: list[dict[str, str]] = field(default_factory=list)
    function_outputs: list[dict[str, str]] = field(default_factory=list)
    client_events: Counter[str] = field(default_factory=Counter)
    created_messages: list[dict[str, str]] = field(default_factory=list)  # the last 50
    last_session: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": {"total": self.connections_total, "current": self.connections_current},
            "sessions": self.sessions,
            "sessionUpdates": self.session_updates,
            "reconnects": self.reconnects,
            "drops": self.drops,
            "refused": self.refused,
            "responses": {
                "created": self.responses_created,
                "completed": self.responses_completed,
                "cancelled": self.responses_cancelled,
                "failed": self.responses_failed,
            },
            "interruptions": self.responses_cancelled,
            "speech": {"started": self.speech_started, "stopped": self.speech_stopped},
            "audioInMs": round(self.audio_in_ms),
            "audioOutMs": round(self.audio_out_ms),
            "errorsSent": self.errors_sent,
            "errors": list(self.errors),
            "functionCalls": list(self.function_calls),
            "functionOutputs": list(self.function_outputs),
            "clientEvents": dict(self.client_events),
            "createdMessages": list(self.created_messages),
            "lastSessionConfig": self.last_session,
        }


class Scenario:
    def __init__(self, name: str, defaults: Settings) -> None:
        self.name = name
        self.defaults = defaults
        self.settings = defaults
        self.stats = Stats()
        self.connections: set[Droppable] = set()
        self.pending_reconnects = 0

    def reset(self) -> None:
        self.settings = self.defaults
        self.stats = Stats(connections_current=len(self.connections))
        self.pending_reconnects = 0

    def opened(self, conn: Droppable) -> None:
        self.connections.add(conn)
        self.stats.connections_total += 1
        self.stats.connections_current = len(self.connections)
        if self.pending_reconnects > 0:
            self.pending_reconnects -= 1
            self.stats.reconnects += 1

    def closed(self, conn: Droppable) -> None:
        self.connections.discard(conn)
        self.stats.connections_current = len(self.connections)

    def dropped(self) -> None:
        self.stats.drops += 1
        self.pending_reconnects += 1

    def pop_tool_call(self) -> ToolCall | None:
        if not self.settings.toolCalls:
            return None
        first, *rest = self.settings.toolCalls
        self.settings = replace(self.settings, toolCalls=tuple(rest))
        return first
