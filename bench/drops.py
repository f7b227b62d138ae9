"""Sessions dropped during scale-downs and rollouts with live calls (target: 0).

The same two scenarios as tests/e2e/test_autoscale_calls.py (tests/e2e/fleet.py, one
copy), repeated until at least 50 calls went through them: the operator (production
timers, bench/live.py) runs REAL worker pods on the testbed, simulated callers talk over
real WebRTC through LiveKit, and a session counts as dropped when its CALLER saw the agent
leave, a turn go unanswered, a second agent join, or the call fail. Each round has a
namespace of its own; the result reports how many calls were on a draining worker (the
ones a scale-down or rollout could have dropped).

    python -m bench.drops                                   # 4 scale-down + 3 rollout rounds
    python -m bench.drops --scale-rounds 1 --rollout-rounds 1 --calls 15   # a quick look
    VOICEFLEET_TESTBED=$PWD/.testbed python -m bench.drops  # reuse a running stack

Writes bench/results/drops.json and prints the figures. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client

from bench.common import Result, Run, operator_flags, summary
from bench.live import live_testbed
from tests.e2e.fleet import (
    LEAVE,
    ROLLOUT,
    ROLLOUT_CALLS,
    SCALE,
    Fleet,
    RolloutRun,
    ScaleRun,
    rollout_under_calls,
    scale_up_then_down,
)
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

SCALE_CALLERS = 6  # 6 -> 3 -> 2 -> 1 callers (LEAVE), at 2 per worker
SCALE_ROUNDS = 4
ROLLOUT_ROUNDS = 3


@contextmanager
def namespace(kube: Kube, prefix: str) -> Iterator[str]:
    name = f"bench-{prefix}-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        kube.core.delete_namespace(name)


def log(message: str) -> None:
    print(f"  {message}", flush=True)


async def measure(
    stack: Stack, kube: Kube, scale_rounds: int, rollout_rounds: int, calls: int
) -> tuple[list[ScaleRun], list[RolloutRun]]:
    scales: list[ScaleRun] = []
    rollouts: list[RolloutRun] = []
    for i in range(scale_rounds):
        with namespace(kube, "scale") as ns:
            fleet = Fleet(stack, kube, ns)
            await fleet.create(SCALE)
            print(f"scale-down {i + 1}/{scale_rounds}: {SCALE_CALLERS} callers at "
                  f"{SCALE.max_per_worker} per worker, leaving {LEAVE}", flush=True)  # fmt: skip
            scales.append(await scale_up_then_down(fleet, SCALE, SCALE_CALLERS, LEAVE, log=log))
    for i in range(rollout_rounds):
        with namespace(kube, "rollout") as ns:
            fleet = Fleet(stack, kube, ns)
            await fleet.create(ROLLOUT)
            print(f"rollout {i + 1}/{rollout_rounds}: {calls} live calls at "
                  f"{ROLLOUT.max_per_worker} per worker", flush=True)  # fmt: skip
            rollouts.append(await rollout_under_calls(fleet, ROLLOUT, n=calls, log=log))
    return scales, rollouts


def _reasons(drops: list[dict[str, str]]) -> str:
    return "; ".join(f"{k}: {v}" for d in drops for k, v in d.items()) or "none"


def figures(scales: list[ScaleRun], rollouts: list[RolloutRun]) -> dict[str, Any]:
    s_calls = sum(s.callers for s in scales)
    r_calls = sum(r.calls for r in rollouts)
    return {
        "calls": s_calls + r_calls,
        "dropped": sum(len(s.drops) for s in scales) + sum(len(r.drops) for r in rollouts),
        "calls_on_draining_workers": sum(s.calls_on_draining_workers for s in scales)
        + sum(r.drained_calls for r in rollouts),
        "scale_down": {
            "rounds": len(scales),
            "calls": s_calls,
            "dropped": sum(len(s.drops) for s in scales),
            "unanswered_turns": sum(s.unanswered for s in scales),
            "calls_on_draining_workers": sum(s.calls_on_draining_workers for s in scales),
            "peak_workers": max((s.peak_replicas for s in scales), default=0),
            "replica_paths": ", ".join("-".join(map(str, s.replica_path)) for s in scales),
            "ramp_s": summary([s.ramp_s for s in scales]),
            "scale_down_s": summary([s.scale_down_s for s in scales]),
            "turn_latency_s": summary([x for s in scales for x in s.latencies]),
            "drop_reasons": _reasons([s.drops for s in scales]),
        },
        "rollout": {
            "rounds": len(rollouts),
            "calls": r_calls,
            "dropped": sum(len(r.drops) for r in rollouts),
            "calls_on_draining_workers": sum(r.drained_calls for r in rollouts),
            "answered_after_rollout": sum(r.answered_after for r in rollouts),
            "kept_their_agent": sum(r.kept_agent for r in rollouts),
            "workers_before": [r.workers for r in rollouts],
            "rollout_s": summary([r.rollout_s for r in rollouts]),
            "old_workers_exit_after_hangup_s": summary([r.drain_exit_s for r in rollouts]),
            "new_call_on_new_worker": all(r.new_call_on_new_worker for r in rollouts),
            "turn_latency_s": summary([x for r in rollouts for x in r.latencies]),
            "drop_reasons": _reasons([r.drops for r in rollouts]),
        },
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--scale-rounds", type=int, default=SCALE_ROUNDS)
    ap.add_argument("--rollout-rounds", type=int, default=ROLLOUT_ROUNDS)
    ap.add_argument(
        "--calls", type=int, default=ROLLOUT_CALLS, help="live calls during each rollout"
    )
    args = ap.parse_args(argv if argv is not None else [])
    run = Run(flags=list(argv or []))
    t0 = time.monotonic()
    with live_testbed("drops") as (stack, kube, op):
        run.operator_flags = operator_flags(op.argv)
        scales, rollouts = asyncio.run(
            measure(stack, kube, args.scale_rounds, args.rollout_rounds, args.calls)
        )
    result = Result(
        "drops",
        {**figures(scales, rollouts), "wall_s": round(time.monotonic() - t0, 1)},
        targets={"dropped": "< 1", "calls": ">= 50"},
        notes=[
            "dropped = counted by the callers: the agent left, a turn went unanswered, a "
            "second agent joined, or the call failed",
            "real worker pods (livekit-agents + OpenAI Realtime plugin) on the node agent, "
            "real LiveKit and WebRTC; the Realtime API is the testbed's stand-in",
            f"scale-down: {SCALE_CALLERS} callers arrive one by one at "
            f"{SCALE.max_per_worker} per worker (buffer {SCALE.buffer_sessions}), then leave "
            f"in groups {LEAVE}, the busiest workers' callers first; calls_on_draining_workers "
            "is the most calls on draining workers at one step, summed over rounds",
            "rollout: spec.model.instructions changes; old workers get SIGTERM and drain "
            "their calls (maxUnavailable 0); calls are answered after the rollout; "
            "calls_on_draining_workers: calls still on an old worker when the rollout completed",
            "the operator runs with its production timers (run.operator_flags)",
        ],
        run=run,
    )
    result.report()


if __name__ == "__main__":
    main(sys.argv[1:])
