"""Sessions dropped during a scale-down and during a rollout with live calls (target: 0).

The same two scenarios as tests/e2e/test_autoscale_calls.py (tests/e2e/fleet.py, one
copy): the operator runs REAL worker pods on the testbed, simulated callers talk over real
WebRTC through LiveKit, and a session counts as dropped when its CALLER saw the agent
leave, a turn go unanswered, a second agent join, or the call fail.

    python -m bench.drops              # its own stack in a temporary directory
    python -m bench.drops --calls 15   # more live calls during the rollout
    VOICEFLEET_TESTBED=$PWD/.testbed python -m bench.drops   # reuse a running stack

Writes bench/results/drops.json and prints the figures. Takes 3-5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from bench.common import Result, summary
from tests.e2e.fleet import (
    LEAVE,
    ROLLOUT,
    ROLLOUT_CALLS,
    SCALE,
    Fleet,
    rollout_under_calls,
    scale_up_then_down,
)
from tests.operator.cluster import OperatorProcess, install_crd, install_images, install_rbac
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack


@contextmanager
def testbed(workdir: Path) -> Iterator[tuple[Stack, Kube]]:
    """A running stack with the CRD and an operator of this checkout; stopped afterwards
    when this started it."""
    reuse = os.environ.get("VOICEFLEET_TESTBED")
    if not reuse:
        (workdir / "testbed").mkdir()
    stack = Stack(Path(reuse)) if reuse else Stack(workdir / "testbed", progress=print)
    started = not (reuse and all(stack.running().values()))
    if started:
        stack.up()
    op: OperatorProcess | None = None
    try:
        kube = Kube.admin(stack)
        if not stack.running().get("voicefleet-operator"):
            install_crd(kube)
            install_images(stack)
            op = OperatorProcess(stack, install_rbac(kube), workdir)
            op.start()
        yield stack, kube
    finally:
        if op is not None:
            op.stop()
        if started:
            stack.down()


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


async def measure(stack: Stack, kube: Kube, calls: int) -> dict[str, Any]:
    with namespace(kube, "scale") as ns:
        fleet = Fleet(stack, kube, ns)
        await fleet.create(SCALE)
        print(f"scale-down: 6 callers at {SCALE.max_per_worker} per worker, leaving {LEAVE}")
        s = await scale_up_then_down(fleet, SCALE, n=6, leave=LEAVE, log=log)
    with namespace(kube, "rollout") as ns:
        fleet = Fleet(stack, kube, ns)
        await fleet.create(ROLLOUT)
        print(f"rollout: {calls} live calls at {ROLLOUT.max_per_worker} per worker")
        r = await rollout_under_calls(fleet, ROLLOUT, n=calls, log=log)
    return {
        "scale_down": {
            "calls": s.callers,
            "dropped": len(s.drops),
            "unanswered_turns": s.unanswered,
            "peak_workers": s.peak_replicas,
            "replica_path": "-".join(map(str, s.replica_path)),
            "calls_on_draining_workers": s.calls_on_draining_workers,
            "ramp_s": s.ramp_s,
            "scale_down_s": s.scale_down_s,
            "turn_latency_s": summary(s.latencies),
            "drop_reasons": "; ".join(f"{k}: {v}" for k, v in s.drops.items()) or "none",
        },
        "rollout": {
            "calls": r.calls,
            "dropped": len(r.drops),
            "workers": r.workers,
            "drained_calls": r.drained_calls,
            "answered_after_rollout": r.answered_after,
            "kept_their_agent": r.kept_agent,
            "rollout_s": r.rollout_s,
            "old_workers_exit_after_hangup_s": r.drain_exit_s,
            "new_call_on_new_worker": r.new_call_on_new_worker,
            "turn_latency_s": summary(r.latencies),
            "drop_reasons": "; ".join(f"{k}: {v}" for k, v in r.drops.items()) or "none",
        },
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--calls", type=int, default=ROLLOUT_CALLS, help="live calls during the rollout"
    )
    args = ap.parse_args(argv if argv is not None else [])
    with (
        tempfile.TemporaryDirectory(prefix="bench-drops-") as tmp,
        testbed(Path(tmp)) as (
            stack,
            kube,
        ),
    ):
        figures = asyncio.run(measure(stack, kube, args.calls))
    result = Result(
        "drops",
        figures,
        targets={"scale_down.dropped": "< 1", "rollout.dropped": "< 1"},
        notes=[
            "dropped = counted by the callers: the agent left, a turn went unanswered, a "
            "second agent joined, or the call failed",
            f"real worker pods (livekit-agents + OpenAI Realtime plugin), real LiveKit and "
            f"WebRTC; the Realtime API is the testbed's stand-in; {os.cpu_count()} CPUs",
            "rollout: spec.model.instructions changes; old workers get SIGTERM and drain "
            "their calls (maxUnavailable 0); calls are answered after the rollout",
        ],
    )
    result.report()


if __name__ == "__main__":
    main(sys.argv[1:])
