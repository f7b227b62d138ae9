"""Issue 13, item 0: the fleet's capacity is what LiveKit really dispatches. REAL worker
pods (livekit-agents, the OpenAI Realtime plugin; the Realtime stand-in is the only
double), real WebRTC callers through the testbed's livekit-server (v1.13.5, whose
`agents.target_load` is its default 0.7).

- Every worker driven to exactly `maxPerWorker` sessions, with targetUtilization 1.0 and
  0.7: every caller gets its agent (before, LiveKit stopped offering at 70 % of each
  worker and the caller waited forever).
- One more caller than the fleet holds at `maxReplicas`: LiveKit cannot place it; the
  operator says so once (`WaitingForCapacity`, status.autoscaler.waitingCalls) and
  dispatches it the moment a slot frees.
- The same with room to grow: the unplaced call is demand, the fleet grows, and the
  caller gets its agent on the new worker.
"""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from tests.operator.cluster import OperatorProcess
from voicefleet_contract import API_VERSION, KIND
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from .fleet import (
    JSON,
    WORKER_START_S,
    Fleet,
    Shape,
    drop_reason,
    hang_up,
    pod_name,
    read_sessions,
    turns,
    until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow]

PER_WORKER = 2


def status(fleet: Fleet) -> JSON:
    va = fleet.kube.get(API_VERSION, KIND, fleet.name, fleet.namespace)
    return dict((va or {}).get("status") or {})


def events(fleet: Fleet, reason: str) -> list[JSON]:
    got = fleet.kube.list("v1", "Event", fleet.namespace)
    return [e for e in got if e.get("reason") == reason]


def sessions_per_worker(fleet: Fleet) -> dict[str, int] | None:
    out = {}
    for p in fleet.live_pods():
        report = read_sessions(p, fleet.kube)
        if report is None:
            return None
        out[pod_name(p)] = report.activeSessions
    return out


async def fill(fleet: Fleet, n: int) -> list[Caller]:
    """`n` callers, one after the other, each with its agent."""
    calls: list[Caller] = []
    for i in range(n):
        c = await fleet.join(fleet.caller())
        calls.append(c)
        assert not c.report.errors, f"caller {i + 1}: {'; '.join(c.report.errors)}"
    return calls


@pytest.mark.parametrize("target_utilization", [1.0, 0.7])
async def test_every_worker_holds_exactly_max_per_worker_and_the_next_call_waits_for_a_slot(
    operator: OperatorProcess,
    stack: Stack,
    kube: Kube,
    namespace: str,
    target_utilization: float,
) -> None:
    shape = Shape(
        max_per_worker=PER_WORKER,
        min_replicas=2,
        max_replicas=2,
        buffer_sessions=0,
        window_s=600,
        target_utilization=target_utilization,
    )
    fleet = Fleet(stack, kube, namespace)
    await fleet.create(shape)
    await until(lambda: fleet.settled(2), WORKER_START_S, "2 workers")
    calls: list[Caller] = []
    try:
        calls += await fill(fleet, 2 * PER_WORKER)
        full = await until(
            lambda: (s := sessions_per_worker(fleet)) and sorted(s.values()) == [2, 2] and s,
            30,
            "both workers at maxPerWorker",
        )
        st = await until(
            lambda: (s := status(fleet)).get("activeSessions") == 4 and s, 30, "status"
        )
        assert st["capacity"] == 2 * PER_WORKER, st  # what LiveKit really dispatches
        assert st["sessions"] == "4/4", st

        # One more than the fleet holds at maxReplicas: it waits, and the operator says so.
        extra = fleet.caller()
        waiting = asyncio.ensure_future(fleet.join(extra))
        await until(
            lambda: (status(fleet).get("autoscaler") or {}).get("waitingCalls") == 1,
            30,
            "status.autoscaler.waitingCalls == 1",
        )
        said = await until(lambda: events(fleet, "WaitingForCapacity"), 10, "the Event")
        assert len(said) == 1 and said[0].get("count", 1) == 1, said
        assert (status(fleet).get("autoscaler") or {}).get("limitedByMax") is True

        # A call ends: the waiting caller gets the freed slot.
        await hang_up(calls[:1])
        calls = calls[1:]
        await waiting
        calls.append(extra)
        assert not extra.report.errors, extra.report.errors
        heard = await turns(calls)
        assert all(x is not None for x in heard), heard
        placed = await until(lambda: events(fleet, "CallPlaced"), 10, "CallPlaced")
        assert len(placed) == 1, placed
        assert len(events(fleet, "WaitingForCapacity")) == 1  # said once, not every tick
        drops = {c.room_name: r for c in calls if (r := drop_reason(c))}
        assert drops == {}, drops
        print(f"\nfull at {full}; the waiting call was placed when a slot freed")
    finally:
        await hang_up(calls)


async def test_a_call_livekit_could_not_place_grows_the_fleet_and_gets_its_agent(
    operator: OperatorProcess, stack: Stack, kube: Kube, namespace: str
) -> None:
    shape = Shape(
        max_per_worker=PER_WORKER,
        min_replicas=1,
        max_replicas=3,
        buffer_sessions=0,
        window_s=600,
        target_utilization=1.0,
    )
    fleet = Fleet(stack, kube, namespace)
    await fleet.create(shape)
    await until(lambda: fleet.settled(1), WORKER_START_S, "the first worker")
    calls: list[Caller] = []
    try:
        calls += await fill(fleet, PER_WORKER)  # the one worker is full; no buffer
        await until(partial(fleet.settled, 1), 10, "still one worker")
        # LiveKit cannot place it at first; the caller waits while a worker starts.
        extra = await fleet.join(fleet.caller(), timeout=WORKER_START_S)
        calls.append(extra)
        assert not extra.report.errors, extra.report.errors
        assert fleet.replicas() == 2  # the unplaced call was demand
        assert len(fleet.live_pods()) == 2
        heard = await turns(calls)
        assert all(x is not None for x in heard), heard
        assert await until(lambda: events(fleet, "CallPlaced"), 10, "CallPlaced")
        drops = {c.room_name: r for c in calls if (r := drop_reason(c))}
        assert drops == {}, drops
    finally:
        await hang_up(calls)
