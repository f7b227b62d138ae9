"""The autoscale benchmark's arithmetic, without a cluster (bench/autoscale.py is the shell):
the fleet shape and the steps per size, the step that needs exactly one more worker, and
the figures (reaction summaries, baseline / ours ratios).

A step sets one worker's live sessions to `maxPerWorker x (current + 1)`: at
`targetUtilization` 1 and no buffer every system wants exactly one more worker. The HPA
(alone, or KEDA's) ignores a change within its tolerance (0.1 by default: it acts only
when sessions / (target x current) > 1.1), i.e. from 10 workers on a VoiceAgent up, one
more worker is a change it will not make; so the plan keeps every stepped VoiceAgent under
that size, where all three systems see the same need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.common import summary

HPA_TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance default


def step_sessions(current: int, per_worker: int) -> int:
    """The live sessions on one worker that need exactly `current + 1` workers."""
    return per_worker * (current + 1)


def hpa_acts(
    current: int, per_worker: int, sessions: int, tolerance: float = HPA_TOLERANCE
) -> bool:
    """Whether the HPA scales `current` workers on `sessions`: its ratio outside
    [1 - tolerance, 1 + tolerance] (the controller's own comparison, in floats)."""
    return not 1 - tolerance <= sessions / (per_worker * current) <= 1 + tolerance


@dataclass(frozen=True)
class Plan:
    """One size: `workers` across `voiceagents` (workers / voiceagents each, held there by
    minReplicas), `steps` reaction samples per system, spread over the VoiceAgents: each
    one's steps run in sequence (the next only after the last was seen and its new worker
    is ready), the VoiceAgents in parallel."""

    workers: int
    voiceagents: int
    steps: int
    per_worker: int = 10

    @property
    def per_voiceagent(self) -> int:
        return self.workers // self.voiceagents

    def rounds(self) -> list[int]:
        """Steps per VoiceAgent (the first ones take the remainder)."""
        base, extra = divmod(self.steps, self.voiceagents)
        return [base + (i < extra) for i in range(self.voiceagents)]

    @property
    def max_replicas(self) -> int:
        """Room for every step and one more (a step never meets maxReplicas)."""
        return self.per_voiceagent + max(self.rounds()) + 1

    def check(self) -> Plan:
        """Raise ValueError for a plan whose steps some system could not see."""
        if self.voiceagents < 1 or self.workers % self.voiceagents:
            raise ValueError(f"{self.workers} workers do not split over {self.voiceagents}")
        for current in range(self.per_voiceagent, self.per_voiceagent + max(self.rounds())):
            if not hpa_acts(current, self.per_worker, step_sessions(current, self.per_worker)):
                raise ValueError(
                    f"at {current} workers a VoiceAgent's one-more-worker step is within the "
                    f"HPA's {HPA_TOLERANCE:g} tolerance: use more VoiceAgents or fewer steps"
                )
        return self


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """ "10:10,200:100" -> [(10, 10), (200, 100)] (workers:voiceagents)."""
    out = []
    for part in text.split(","):
        if part.strip():
            workers, _, vas = part.partition(":")
            out.append((int(workers), int(vas or workers)))
    return out


def reaction_summary(values: Sequence[float]) -> dict[str, float]:
    """n, p50, max, and p95 only from MIN_P95_SAMPLES samples or more."""
    return summary(values)


def ratios(baseline: Mapping[str, float], ours: Mapping[str, float]) -> dict[str, float]:
    """baseline / ours for p50 and for the tail both report: p95, else max (named so)."""
    tail = "p95" if "p95" in baseline and "p95" in ours else "max"
    return {stat: baseline[stat] / ours[stat] if ours[stat] else math.nan for stat in ("p50", tail)}
