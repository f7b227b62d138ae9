"""What a simulated call measured, and a summary over many calls. Times are seconds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TurnResult:
    index: int
    speech_s: float
    latency_s: float | None = None  # end of the caller's speech -> first agent audio heard
    answer_s: float | None = None  # how long the agent's answer lasted
    interrupted: bool = False  # the caller talked over the agent in this turn
    stopped_s: float | None = None  # interruption start -> agent audio stopped
    spoke_until: float | None = None  # loop time the speech played out (diagnostics)


@dataclass
class CallReport:
    room: str
    identity: str
    agent_name: str | None
    connected: bool = False
    dispatch_s: float | None = None  # caller joined -> an agent participant present
    first_audio_s: float | None = None  # caller joined -> first agent audio heard
    agent_joins: int = 0
    agent_leaves: int = 0
    max_agents: int = 0  # most agent participants in the room at once (two talk over each other)
    # the longest stretch with two or more agents in the room (seconds, once it ended)
    longest_overlap_s: float = 0.0
    failover_gaps_s: list[float] = field(default_factory=list)  # agent left -> next joined
    dropped: bool = False  # an agent left and none came back within the drop window
    turns: list[TurnResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return [t.latency_s for t in self.turns if t.latency_s is not None]

    @property
    def unanswered(self) -> int:
        return sum(1 for t in self.turns if t.latency_s is None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Summary:
    calls: list[CallReport]

    @property
    def latencies(self) -> list[float]:
        return [x for c in self.calls for x in c.latencies]

    def to_dict(self) -> dict[str, Any]:
        lat = self.latencies
        dispatch = [c.dispatch_s for c in self.calls if c.dispatch_s is not None]
        return {
            "calls": len(self.calls),
            "connected": sum(c.connected for c in self.calls),
            "agentJoined": sum(c.dispatch_s is not None for c in self.calls),
            "dropped": sum(c.dropped for c in self.calls),
            "turns": sum(len(c.turns) for c in self.calls),
            "answered": len(lat),
            "unanswered": sum(c.unanswered for c in self.calls),
            "latency": {
                "p50": percentile(lat, 0.5),
                "p95": percentile(lat, 0.95),
                "max": max(lat) if lat else None,
            },
            "dispatch": {"p50": percentile(dispatch, 0.5), "max": max(dispatch, default=None)},
            "errors": [e for c in self.calls for e in c.errors],
        }

    def ok(self) -> bool:
        """Every call connected, had an agent join, got every turn answered, was not
        dropped and raised nothing (a call no agent joined has no turns: not ok)."""
        return all(
            c.connected
            and c.dispatch_s is not None
            and not c.dropped
            and c.unanswered == 0
            and not c.errors
            for c in self.calls
        )
