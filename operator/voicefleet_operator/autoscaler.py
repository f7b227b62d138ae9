"""The built-in autoscaler's decision: how many workers a VoiceAgent needs. Pure.

Inputs are plain data (one sample per worker pod, the policy, the current replica count,
recent recommendations); the output says the desired count, why, and what to remember.
The operator's loop reads the pods every second and calls `decide`; nothing here does I/O.

The rules:
- Demand is live sessions, plus calls waiting for an agent that LiveKit could not place
  (every worker full: failover counts them), plus a buffer of spare sessions; a worker is
  planned at `targetUtilization` of its `maxPerWorker`, so
  needed = ceil(demand / (max * target)).
- A pod that did not answer counts as full, never as empty: a hung metrics endpoint must
  not make the fleet shrink under live calls.
- Scale up at once, by at most `scaleUpStep` pods per decision (a step bounds a burst of
  bad samples). Scale down only to the highest recommendation of the stabilisation
  window, by at most `scaleDownStep` pods per decision.
- Clamp to [minReplicas, maxReplicas]; report when the max is what limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .fleet import WorkerPod

Direction = Literal["up", "down", "none"]


@dataclass(frozen=True)
class PodSample:
    name: str
    active_sessions: int | None  # None: the pod did not answer in time
    capacity: int
    draining: bool = False

    @property
    def answered(self) -> bool:
        return self.active_sessions is not None

    def effective_sessions(self) -> int:
        # Unknown counts as full: never shrink on missing data.
        return self.capacity if self.active_sessions is None else self.active_sessions


@dataclass(frozen=True)
class Policy:
    min_replicas: int = 1
    max_replicas: int = 10
    max_per_worker: int = 10
    target_utilization: float = 0.7
    buffer_sessions: int = 0
    scale_up_step: int = 10
    scale_down_step: int = 1
    stabilization_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= minReplicas <= maxReplicas")
        if not 0 < self.target_utilization <= 1:
            raise ValueError("targetUtilization must be in (0, 1]")
        if self.max_per_worker < 1 or self.scale_up_step < 1 or self.scale_down_step < 1:
            raise ValueError("maxPerWorker and steps must be >= 1")


@dataclass(frozen=True)
class Recommendation:
    at: float  # monotonic seconds
    replicas: int


@dataclass(frozen=True)
class Decision:
    desired: int
    direction: Direction
    reason: str
    sessions: int  # live sessions counted (unanswered pods as full)
    capacity: int  # sessions the current ready workers accept
    needed: int  # replicas the demand asks for, before steps and stabilisation
    limited_by_max: bool
    unanswered: int
    history: tuple[Recommendation, ...] = field(default=())
    waiting: int = 0  # calls LiveKit could not place, counted as demand


def needed_replicas(sessions: int, policy: Policy, waiting: int = 0) -> int:
    demand = sessions + max(0, waiting) + policy.buffer_sessions
    per_worker = policy.max_per_worker * policy.target_utilization
    return math.ceil(demand / per_worker - 1e-9) if demand > 0 else 0


def decide(
    now: float,
    samples: Sequence[PodSample],
    current: int,
    policy: Policy,
    history: Sequence[Recommendation] = (),
    waiting: int = 0,
) -> Decision:
    """The replica count for one VoiceAgent at time `now` (monotonic seconds).
    `waiting`: calls with no agent that LiveKit could not place (no worker had a slot)."""
    sessions = sum(s.effective_sessions() for s in samples)
    capacity = sum(s.capacity for s in samples if not s.draining)
    unanswered = sum(1 for s in samples if not s.answered)
    waiting = max(0, waiting)
    raw = needed_replicas(sessions, policy, waiting)
    limited = raw > policy.max_replicas
    target = min(max(raw, policy.min_replicas), policy.max_replicas)
    # Keep only the window; the current recommendation joins it.
    window = tuple(r for r in history if now - r.at < policy.stabilization_seconds)
    window += (Recommendation(now, target),)

    if not samples and current > 0:
        # No worker answered as ready (starting, or all gone): do not act on no data,
        # except to honour the bounds.
        desired = min(max(current, policy.min_replicas), policy.max_replicas)
        direction: Direction = (
            "up" if desired > current else "down" if desired < current else "none"
        )
        return Decision(
            desired,
            direction,
            "no ready workers to sample; holding",
            0,
            0,
            raw,
            limited,
            0,
            window,
            waiting,
        )

    if target > current:
        desired = min(target, current + policy.scale_up_step)
        reason = f"{sessions} sessions{waiting_text(waiting)} + {policy.buffer_sessions} buffer need {target} workers"
        if desired < target:
            reason += f" (step limited to +{policy.scale_up_step})"
        direction = "up"
    else:
        # Scale down no lower than anything recommended within the window.
        stable = max(r.replicas for r in window)
        desired = max(stable, current - policy.scale_down_step, policy.min_replicas)
        desired = min(desired, current)
        if desired < current:
            direction = "down"
            reason = f"{sessions} sessions + {policy.buffer_sessions} buffer need {target} workers for {policy.stabilization_seconds:.0f}s"
        else:
            direction = "none"
            reason = (
                f"{sessions} sessions fit {current} workers"
                if target == current
                else f"waiting out the {policy.stabilization_seconds:.0f}s stabilisation window before removing workers"
            )
    if limited:
        reason += f"; limited by maxReplicas={policy.max_replicas}"
    return Decision(
        desired, direction, reason, sessions, capacity, raw, limited, unanswered, window, waiting
    )


def waiting_text(waiting: int) -> str:
    return f" + {waiting} waiting for an agent" if waiting else ""


def free_slots(samples: Sequence[PodSample]) -> int:
    """Sessions the answering, non-draining workers can still take: where LiveKit can place
    a call now (a worker that did not answer counts as full)."""
    return sum(max(0, s.capacity - s.effective_sessions()) for s in samples if not s.draining)


def deletion_costs(samples: Sequence[PodSample]) -> dict[str, int]:
    """`controller.kubernetes.io/pod-deletion-cost` per pod: idle workers go first, busy ones
    last, and a pod we could not read counts as full. Set right before a scale-down only."""
    return {s.name: s.effective_sessions() for s in samples}


def samples_of(
    pods: Sequence[WorkerPod], scraped: Mapping[str, Any], capacity: int
) -> list[PodSample]:
    """One sample per ready, non-terminating worker that has been read; a failed read
    (None) counts as full, a worker not read yet is left out."""
    out = []
    for p in pods:
        if not p.ready or p.deleting or not p.ip or p.name not in scraped:
            continue
        report = scraped[p.name]
        out.append(
            PodSample(
                p.name,
                report.activeSessions if report else None,
                report.capacity if report else capacity,
                bool(report and report.draining),
            )
        )
    return out
