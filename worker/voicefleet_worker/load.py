"""Session-based load, as LiveKit's dispatcher and the autoscaler both see it.

The capacity model is the contract's (`voicefleet_contract.capacity`): a worker reports
`targetLoad * active / maxPerWorker`, so livekit-server's own `agents.target_load` line is
reached exactly at `maxPerWorker` sessions, and livekit-agents' `load_threshold` is that
same line: a worker with maxPerWorker - 1 sessions still gets and accepts one more offer,
one with maxPerWorker refuses. FULL is a dispatch state, never a health state (the health
endpoint stays 200, so a full worker stays Ready).

livekit-agents calls `load_fnc` every 0.5 s and before answering each job offer. It also
counts offers it accepted but has not launched yet ("reserved slots"), priced at
load/active per job, or at threshold / num_idle_processes when no job runs.
`idle_processes` keeps that estimate at or above one slot, so concurrent offers to an
idle worker are priced conservatively but not so high that the second concurrent caller
is refused by a worker with room.
"""

from __future__ import annotations

from typing import Final

from voicefleet_contract.capacity import full_threshold, reported_load

MAX_IDLE: Final = 4  # warm job executors (threads) kept at most


def session_load(active: int, capacity: int, target_load: float) -> float:
    """Load in [0, target_load]: the share of this worker's slots in use, on LiveKit's scale."""
    return reported_load(active, capacity, target_load)


def idle_processes(capacity: int) -> int:
    return max(1, min(capacity, MAX_IDLE))


def effective_load(active: int, reserved: int, capacity: int, target_load: float) -> float:
    """What livekit-agents 1.8.9 (`AgentServer._get_effective_load`) computes from our load."""
    load = session_load(active, capacity, target_load)
    threshold = full_threshold(target_load)
    per_job = load / active if active > 0 else threshold / max(idle_processes(capacity), 1)
    return load + reserved * per_job


def accepts(
    active: int, reserved: int, capacity: int, target_load: float, draining: bool = False
) -> bool:
    """Whether the worker says yes to one more job offer (the dispatcher's view)."""
    if draining:
        return False
    return effective_load(active, reserved, capacity, target_load) < full_threshold(target_load)


def status(active: int, capacity: int, target_load: float, draining: bool = False) -> str:
    """The status livekit-agents reports: FULL at or above the threshold, or while draining."""
    if draining or session_load(active, capacity, target_load) >= full_threshold(target_load):
        return "FULL"
    return "AVAILABLE"


__all__ = [
    "accepts",
    "effective_load",
    "idle_processes",
    "session_load",
    "status",
]
