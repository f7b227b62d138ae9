"""Issue 5 end to end: the operator autoscales REAL worker pods (livekit-agents, the OpenAI
Realtime plugin) under real WebRTC callers through the testbed's LiveKit server; the
Realtime stand-in is the only double. Drops are counted by the callers (tests/e2e/fleet.py).

The hung-metrics case (a worker that does not answer counts as full) is proven with fake
workers in tests/operator/test_autoscale_cluster.py and is not repeated here.
"""

from __future__ import annotations

import pytest

from tests.operator.cluster import OperatorProcess
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from .fleet import (
    LEAVE,
    ROLLOUT,
    ROLLOUT_CALLS,
    SCALE,
    Fleet,
    rollout_under_calls,
    scale_up_then_down,
)

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow]


async def test_scale_up_to_cover_callers_then_down_without_dropping_any(
    operator: OperatorProcess, stack: Stack, kube: Kube, namespace: str
) -> None:
    fleet = Fleet(stack, kube, namespace)
    await fleet.create(SCALE)
    run = await scale_up_then_down(fleet, SCALE, n=6, leave=LEAVE)

    # Up to cover 6 callers + the buffer (more only if a starved worker's /sessions went
    # unanswered: it counts as full), then down one worker per step to the minimum.
    path = run.replica_path
    assert run.peak_replicas >= SCALE.needed(6) == 4, path
    top = path.index(max(path))
    assert path[0] == SCALE.min_replicas and path[-1] == SCALE.min_replicas, path
    assert all(a - b == 1 for a, b in zip(path[top:], path[top + 1 :], strict=False)), path
    assert run.unanswered == 0, run
    assert run.drops == {}, run.drops
    # The way down went step by step to the minimum, and the calls on the workers that
    # were removed went on (a removed worker drained its call; the caller noticed nothing).
    sizes = [s.replicas for s in run.steps]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == SCALE.min_replicas, run.steps
    assert all(s.answered == s.callers for s in run.steps), run.steps
    assert run.calls_on_draining_workers >= 1, run.steps
    print(f"\n{run}")


async def test_rollout_during_live_calls_drops_none(
    operator: OperatorProcess, stack: Stack, kube: Kube, namespace: str
) -> None:
    fleet = Fleet(stack, kube, namespace)
    await fleet.create(ROLLOUT)
    run = await rollout_under_calls(fleet, ROLLOUT, n=ROLLOUT_CALLS)

    # 10 calls + 2 buffer at 5 per worker need 3; a worker whose /sessions read timed out
    # while the machine was starved counts as full, which may add one (never fewer).
    assert run.workers >= ROLLOUT.needed(ROLLOUT_CALLS) == 3, run
    assert run.calls == ROLLOUT_CALLS
    run.check_dropped_none()
    print(f"\n{run}")
