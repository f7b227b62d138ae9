"""Chaos benchmark (issue 13): per fault, from the fault to a new agent in the room, and
what the callers lost, with live calls on both workers of a two-worker fleet.

The faults and a round are tests/e2e/chaos.py's (the chaos test asserts on the same rounds):
`sigkill` and `force-delete` (the worker is gone), `sigstop` (it hangs, with its job
processes), `operator-kill` (the operator SIGKILLed with the worker, then restarted),
`apiserver-restart` (the API server restarted, then the worker SIGKILLed), `partition` (the
operator cut off from a healthy worker's /sessions for 35 s: nobody may be failed over),
`node-gone` (a second hollow node is added and a fleet of four workers spread over the two;
the busiest worker's node is lost with every pod on it: its node agent SIGKILLed and every
container on it SIGSTOPped, so nothing answers and nothing says goodbye). Real workers
(livekit-agents, the OpenAI Realtime plugin on the stand-in, the one double), the real
LiveKit server, the operator from this checkout with webhooks on.

python -m bench.chaos                      # every fault, 10 rounds of 3 calls (operator's: 4)
python -m bench.chaos --rounds 2 sigkill   # fewer while developing
python -m bench.chaos partition            # some faults: bench/results/chaos-partition.json (the full run: chaos.json)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from kubernetes import client

from bench.common import Result, Run, operator_flags, summary, tail
from bench.live import live_testbed
from tests.e2e.chaos import FAULTS, GONE, HANG, NODE, Chaos, Round
from tests.e2e.failover_scenario import WorkerFleet
from tests.operator.cluster import OperatorProcess
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

# Rounds per fault: enough hit calls (~2 a round) for a p95 where there is a time target;
# the operator faults cost ~25 s of LiveKit's timeout each and have none.
ROUNDS = {"sigkill": 10, "force-delete": 10, "sigstop": 10, "operator-kill": 4,
          "apiserver-restart": 4, "partition": 4, "node-gone": 10}  # fmt: skip
CALLS = 3
NODE_CALLS = 4  # on 4 workers over 2 nodes: about half of them on the lost node
ALL = FAULTS + NODE
BUDGET_S = 45 * 60
TARGET_S = {**{f: 1.5 for f in GONE}, **{f: 5.0 for f in HANG}}  # fault -> new agent


def figures(rounds: list[Round]) -> dict[str, Any]:
    calls = [c for r in rounds for c in r.calls]
    victims = [c for c in calls if c.victim]
    bystanders = [c for c in calls if not c.victim]
    return {
        "rounds": len(rounds),
        "calls": len(calls),
        "victim_calls": len(victims),
        "recovered_pct": 100.0 * sum(c.ok for c in victims) / len(victims) if victims else 0.0,
        "calls_with_two_agents": sum(c.max_agents > 1 for c in calls),
        # the operator's failed /sessions reads of the fleet during the rounds (a partition
        # must show some: the proof it cut the operator off)
        "operator_read_failures": sum(r.read_failures for r in rounds),
        "bystander_calls_lost": sum(not c.ok for c in bystanders),
        "fault_to_new_agent_s": summary(
            [c.new_agent_s for c in victims if c.new_agent_s is not None]
        ),
        # each hit call's time, sorted: where they cluster says which path recovered them
        "fault_to_new_agent_values_s": sorted(
            round(c.new_agent_s, 2) for c in victims if c.new_agent_s is not None
        ),
        # every call that was not whole, as the caller saw it: what went wrong
        "not_ok": [asdict(c) for c in calls if not c.ok],
    }


async def run(
    stack: Stack,
    kube: Kube,
    op: OperatorProcess,
    faults: list[str],
    rounds: int | None,
    deadline: float,
) -> dict[str, list[Round]]:
    out: dict[str, list[Round]] = {f: [] for f in faults}
    worker_faults = [f for f in faults if f not in NODE]
    if worker_faults:
        async with fleet_of(stack, kube, "chaos", replicas=2) as fleet:
            await _rounds(Chaos(stack, fleet, op), worker_faults, rounds, CALLS, deadline, out)
    node_faults = [f for f in faults if f in NODE]
    if node_faults:
        print(f"  adding a hollow node: {stack.add_hollow_node()}", flush=True)
        async with fleet_of(stack, kube, "chaos-node", replicas=4, spread=True) as fleet:
            where = sorted(p["spec"]["nodeName"] for p in fleet.pods())
            print(f"  4 workers spread over the nodes: {where}", flush=True)
            chaos = Chaos(stack, fleet, op)
            await _rounds(chaos, node_faults, rounds, NODE_CALLS, deadline, out)
    return out


@contextlib.asynccontextmanager
async def fleet_of(
    stack: Stack, kube: Kube, name: str, replicas: int, spread: bool = False
) -> AsyncIterator[WorkerFleet]:
    ns = f"bench-{name}-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    fleet = WorkerFleet(stack, kube, ns, name)
    try:
        await fleet.start(replicas=replicas, spread=spread)
        yield fleet
    finally:
        await fleet.close()
        kube.core.delete_namespace(ns)


async def _rounds(
    chaos: Chaos,
    faults: list[str],
    rounds: int | None,
    calls: int,
    deadline: float,
    out: dict[str, list[Round]],
) -> None:
    for fault in faults:
        n = rounds or ROUNDS[fault]
        for i in range(n):
            if time.monotonic() > deadline:
                print(f"  time budget reached: {fault} after {i} rounds")
                break
            r = await chaos.round(fault, calls)
            out[fault].append(r)
            times = [f"{c.new_agent_s:.2f}s" for c in r.victims if c.new_agent_s is not None]
            bad = [c for c in r.calls if not c.ok]
            print(
                f"  {fault} {i + 1}/{n}: {r.victim_pod}: {len(r.victims)} hit, new agent "
                f"{times}, {len(r.bystanders)} bystanders" + (f"; NOT OK: {bad}" if bad else ""),
                flush=True,
            )


def main(argv: list[str] | None = None) -> Result:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    ap.add_argument("faults", nargs="*", help=f"some of: {', '.join(ALL)} (default: all)")
    ap.add_argument(
        "--rounds", type=int, help="rounds per fault (default: 10, 4 for the operator's)"
    )
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    unknown = [f for f in args.faults if f not in ALL]
    if unknown:
        ap.error(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    faults = list(args.faults) or list(ALL)
    info = Run(flags=argv if argv is not None else sys.argv[1:])
    t0 = time.monotonic()
    with live_testbed("chaos") as (stack, kube, op):
        info.operator_flags = operator_flags(op.argv)
        results = asyncio.run(run(stack, kube, op, faults, args.rounds, t0 + BUDGET_S))
    figs: dict[str, Any] = {f: figures(rs) for f, rs in results.items()}
    targets: dict[str, str] = {}
    for fault, fig in figs.items():
        targets[f"{fault}.recovered_pct"] = ">= 100"
        targets[f"{fault}.calls_with_two_agents"] = "< 1"
        targets[f"{fault}.bystander_calls_lost"] = "< 1"
        if fault in TARGET_S and fig["fault_to_new_agent_s"]["n"]:
            stat = tail(fig["fault_to_new_agent_s"])
            targets[f"{fault}.fault_to_new_agent_s.{stat}"] = f"< {TARGET_S[fault]}"
    figs["wall_s"] = round(time.monotonic() - t0, 1)
    # A subset of the faults is its own result (chaos-<faults>.json): the full run stays.
    name = "chaos" if faults == list(ALL) else "-".join(["chaos", *faults])
    result = Result(
        name,
        figures=figs,
        targets=targets,
        notes=[
            f"{CALLS} calls per round on 2 real workers (livekit-agents, OpenAI Realtime "
            "plugin -> stand-in) on the node agent's node; the worker serving the most is hit",
            "fault_to_new_agent_s: from the fault to a new agent participant in the room, "
            "as the caller saw it; the target is on the p95 with 20 or more samples, "
            "otherwise on the maximum",
            "recovered: the hit call got exactly one new agent and was answered again (for "
            "partition: it kept its agent, got none new, and was answered); bystander lost: "
            "a call on the other worker lost its agent or went unanswered",
            "operator-kill and apiserver-restart have no time target: the restarted operator "
            "finds the call once LiveKit drops the dead agent (~20 s), by webhook or sweep",
            f"node-gone: {NODE_CALLS} calls per round on 4 workers spread over 2 hollow nodes "
            "(topologySpreadConstraints on the hostname); every call on the busiest worker's "
            "node is hit; no time target (nothing on a dead node reports its death)",
            "the operator runs with its production timers (run.operator_flags)",
        ],
        run=info,
    )
    result.report()
    return result


if __name__ == "__main__":
    main()
