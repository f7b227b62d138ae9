"""Session-based load, as LiveKit's dispatcher and the autoscaler both see it.

livekit-agents calls `load_fnc` every 0.5 s and before answering each job offer; the
worker reports FULL (and refuses offers) once its *effective* load reaches
`load_threshold`. With load = active / maxPerWorker and a threshold of (just under) 1.0, a
worker with maxPerWorker - 1 sessions still accepts one more and a worker with
maxPerWorker sessions refuses: FULL is a dispatch state, never a health state (the
health endpoint stays 200, so a full worker stays Ready).

livekit-agents also counts offers it accepted but has not launched yet ("reserved
slots"), priced at load/active per job, or at threshold / num_idle_processes when no job
runs. `idle_processes` keeps that estimate at or above 1/maxPerWorker, so concurrent
offers to an idle worker are priced conservatively but not so high that the second
concurrent caller is refused by a worker with room.
"""

from __future__ import annotations

from typing import Final

# Just under 1.0: the sum livekit-agents forms from float shares ((n-1)/n + 1/n) may
# round to 0.9999999999999999, which must still count as full. maxPerWorker is at most
# 1000, so (n-1)/n <= 0.999 stays clearly below.
LOAD_THRESHOLD: Final = 1.0 - 1e-6
MAX_IDLE: Final = 4  # warm job executors (threads) kept at most


def session_load(active: int, capacity: int) -> float:
    """Load in [0, 1]: the share of this worker's session slots in use."""
    if capacity <= 0:
        return 1.0
    return min(1.0, max(0, active) / capacity)


def idle_processes(capacity: int) -> int:
    return max(1, min(capacity, MAX_IDLE))


def effective_load(active: int, reserved: int, capacity: int) -> float:
    """What livekit-agents 1.8.9 (`AgentServer._get_effective_load`) computes from our load."""
    load = session_load(active, capacity)
    per_job = load / active if active > 0 else LOAD_THRESHOLD / max(idle_processes(capacity), 1)
    return load + reserved * per_job


def accepts(active: int, reserved: int, capacity: int, draining: bool = False) -> bool:
    """Whether the worker says yes to one more job offer (the dispatcher's view)."""
    if draining:
        return False
    return effective_load(active, reserved, capacity) < LOAD_THRESHOLD


def status(active: int, capacity: int, draining: bool = False) -> str:
    """The status livekit-agents reports: FULL at or above the threshold, or while draining."""
    if draining or session_load(active, capacity) >= LOAD_THRESHOLD:
        return "FULL"
    return "AVAILABLE"


def free_slots(active: int, capacity: int) -> int:
    return max(0, capacity - active)


__all__ = [
    "LOAD_THRESHOLD",
    "accepts",
    "effective_load",
    "free_slots",
    "idle_processes",
    "session_load",
    "status",
]
