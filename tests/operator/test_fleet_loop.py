"""The one loop of the autoscaler and failover (fleet_loop.FleetLoop): when a VoiceAgent runs,
and that nothing runs for one whose inputs did not change. The parts are recording stand-ins
for `Failover` and `Autoscaler` (their own tests cover what a tick decides); the feed is
the real `SessionFeed` with no pods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import kopf
import pytest

from tests.operator.util import body, minimal_spec
from voicefleet_contract.sessions import SessionsReport
from voicefleet_operator.autoscale_loop import IDLE_SECONDS
from voicefleet_operator.autoscaler import Decision
from voicefleet_operator.daemons import TICK_SECONDS
from voicefleet_operator.events import PostEvent
from voicefleet_operator.feed import SessionFeed
from voicefleet_operator.fleet import Reading, WorkerPod
from voicefleet_operator.fleet_loop import FleetLoop
from voicefleet_operator.spec import VoiceAgentSpec

NS = "voice"
FAR = 1000.0  # a due time no test reaches


class Stopped:
    """kopf's DaemonStopped as the loop uses it: `wait()` and `reason`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason: kopf.DaemonStoppingReason | None = None

    async def wait(self) -> None:
        await self._event.wait()

    def stop(self, reason: kopf.DaemonStoppingReason) -> None:
        self.reason = reason
        self._event.set()


class Part:
    """Records each tick of each VoiceAgent; `hold` makes ticks wait; `delay` is what a
    tick asks for; `fail` makes ticks raise."""

    def __init__(self, delay: float = FAR) -> None:
        self.delay = delay
        self.ticks: dict[str, int] = {}
        self.forgotten: list[str] = []
        self.observed: list[str] = []
        self.hold: asyncio.Event | None = None
        self.fail = False
        self.inside = 0
        self.most_inside: dict[str, int] = {}
        self.notify: Callable[[str, str], None] = lambda _ns, _name: None

    async def _tick(self, spec: VoiceAgentSpec) -> None:
        name = spec.name
        self.inside += 1
        self.most_inside[name] = max(self.most_inside.get(name, 0), self.inside)
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.fail:
                raise RuntimeError("a bug in one part")
            self.ticks[name] = self.ticks.get(name, 0) + 1
        finally:
            self.inside -= 1

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append(name)


class FakeFailover(Part):
    async def tick(
        self,
        spec: VoiceAgentSpec,
        pods: Sequence[WorkerPod],
        readings: Mapping[str, Reading],
        post: PostEvent,
    ) -> float:
        await self._tick(spec)
        return self.delay

    def waiting(self, namespace: str, name: str) -> int:
        return 0

    def observe(
        self, namespace: str, name: str, pods: Sequence[WorkerPod], readings: Mapping[str, Reading]
    ) -> None:
        self.observed.append(name)


class FakeAutoscaler(Part):
    async def tick(
        self,
        spec: VoiceAgentSpec,
        pods: Sequence[WorkerPod],
        current: int | None,
        reports: Mapping[str, SessionsReport | None],
        post_event: Callable[[str, str, str], None] = lambda *_: None,
        status: Mapping[str, Any] | None = None,
        waiting: int = 0,
    ) -> Decision | None:
        await self._tick(spec)
        return None  # no Deployment yet: at rest


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class FakeResync:
    """The reconciler's timer: counts its calls; `fail` makes them raise."""

    def __init__(self, tick: float) -> None:
        self.resync_tick = tick
        self.calls = 0
        self.fail = False

    async def resync(self, namespace: str, name: str) -> float:
        self.calls += 1
        if self.fail:
            raise RuntimeError("the API server is away")
        return self.resync_tick


class Fleet:
    def __init__(self, failover_delay: float = FAR, resync: FakeResync | None = None) -> None:
        self.feed = SessionFeed()
        self.failover = FakeFailover(failover_delay)
        self.autoscaler = FakeAutoscaler()
        self.loop = FleetLoop(
            self.feed,
            self.autoscaler,
            self.failover,
            workers=4,
            resync=resync,
            phase=lambda tick: tick,  # the first resync a whole tick after enrolment
        )
        self.members: dict[str, tuple[Stopped, asyncio.Task[None]]] = {}

    def enrol(self, name: str) -> None:
        b = body(minimal_spec() | {"autoscaling": {"mode": "builtin"}}, name, NS)
        stopped = Stopped()
        task = asyncio.create_task(
            self.loop.attend(
                NS,
                name,
                cast(kopf.Body, b),
                cast(kopf.Spec, b["spec"]),
                cast(kopf.DaemonStopped, stopped),
            )
        )
        self.members[name] = (stopped, task)

    def runs(self, name: str) -> int:
        return self.failover.ticks.get(name, 0)

    async def settled(self, name: str, runs: int) -> None:
        """`name` has run `runs` times, and nothing more is queued or running for it."""
        await until(lambda: self.runs(name) >= runs, f"{name} to run {runs} times")
        await until(
            # The autoscaler at rest asks for its idle backstop, failover for FAR.
            lambda: (self.loop.due_in(NS, name) or 0) > IDLE_SECONDS - 5,
            f"{name} to wait for its due time",
        )
        assert self.runs(name) == runs

    async def close(self) -> None:
        for stopped, task in self.members.values():
            stopped.stop(kopf.DaemonStoppingReason.OPERATOR_EXITING)
            await task
        await self.loop.close()
        await self.feed.close()


@pytest.fixture
async def fleet() -> Any:
    f = Fleet()
    yield f
    await f.close()


async def test_an_enrolled_voiceagent_runs_once_then_waits_for_its_inputs(fleet: Fleet) -> None:
    fleet.enrol("a")
    await fleet.settled("a", 1)
    assert fleet.autoscaler.ticks == {"a": 1}  # both parts, on the same wake-up


async def test_a_burst_of_wake_ups_makes_one_run(fleet: Fleet) -> None:
    fleet.enrol("a")
    await fleet.settled("a", 1)
    for _ in range(20):
        fleet.feed.poke(NS, "a")  # a pod's several watch events, a Deployment event
    await fleet.settled("a", 2)
    assert fleet.failover.observed.count("a") == 20  # each reading seen as it came


async def test_a_wake_up_during_a_run_makes_one_more_run_never_two_at_once(
    fleet: Fleet,
) -> None:
    fleet.enrol("a")
    await fleet.settled("a", 1)
    fleet.failover.hold = asyncio.Event()
    fleet.loop.wake(NS, "a")
    await until(lambda: fleet.failover.inside == 1, "the run to start")
    for _ in range(5):
        fleet.loop.wake(NS, "a")
    assert fleet.loop.due_in(NS, "a") is not None
    # Due while it runs: marked to run once more when this run ends.
    await until(lambda: fleet.loop.due_in(NS, "a") is None, "the wake-up to come due")
    fleet.failover.hold.set()
    await fleet.settled("a", 3)
    assert fleet.failover.most_inside["a"] == 1


async def test_a_voiceagent_that_waits_on_a_part_does_not_hold_up_another(fleet: Fleet) -> None:
    fleet.enrol("a")
    fleet.enrol("b")
    await fleet.settled("a", 1)
    await fleet.settled("b", 1)
    fleet.failover.hold = asyncio.Event()
    fleet.loop.wake(NS, "a")
    await until(lambda: fleet.failover.inside == 1, "a's run to start")
    fleet.failover.hold = None  # b's run does not wait
    fleet.loop.wake(NS, "b")
    await fleet.settled("b", 2)
    assert fleet.runs("a") == 1  # still waiting


async def test_a_due_time_runs_the_part_due_and_an_input_runs_both() -> None:
    f = Fleet(failover_delay=0.3)  # failover: a case open; the autoscaler: at rest
    try:
        f.enrol("a")
        await until(
            lambda: f.runs("a") >= 1 and f.loop.due_in(NS, "a") is not None, "the first run"
        )
        due = f.loop.due_in(NS, "a")
        assert due is not None and due <= 0.3
        await until(lambda: f.runs("a") >= 3, "runs at the asked pace")
        # Only the part that asked: the autoscaler, at rest, waits for an input or its
        # idle backstop.
        assert f.autoscaler.ticks == {"a": 1}
        f.feed.poke(NS, "a")  # an input: both parts
        await until(lambda: f.autoscaler.ticks["a"] == 2, "the autoscaler on an input")
    finally:
        await f.close()


async def test_a_part_that_fails_does_not_stop_the_other_and_it_runs_again_in_a_tick(
    fleet: Fleet,
) -> None:
    fleet.failover.fail = True
    fleet.enrol("a")
    await until(
        lambda: fleet.autoscaler.ticks.get("a", 0) >= 1 and fleet.loop.due_in(NS, "a") is not None,
        "the autoscaler's tick",
    )
    due = fleet.loop.due_in(NS, "a")
    assert due is not None and due <= TICK_SECONDS
    fleet.failover.fail = False
    await fleet.settled("a", 1)


async def test_a_voiceagent_that_leaves_is_forgotten_and_runs_no_more(fleet: Fleet) -> None:
    fleet.enrol("a")
    await fleet.settled("a", 1)
    stopped, task = fleet.members.pop("a")
    stopped.stop(kopf.DaemonStoppingReason.RESOURCE_DELETED)
    await task
    assert fleet.failover.forgotten == fleet.autoscaler.forgotten == ["a"]
    assert fleet.loop.due_in(NS, "a") is None
    fleet.loop.wake(NS, "a")
    fleet.feed.poke(NS, "a")
    assert fleet.loop.due_in(NS, "a") is None  # nothing scheduled for it
    assert fleet.runs("a") == 1


async def test_a_webhook_for_a_voiceagent_wakes_it(fleet: Fleet) -> None:
    fleet.enrol("a")
    await fleet.settled("a", 1)
    fleet.failover.notify(NS, "a")  # what Failover.on_webhook calls
    await fleet.settled("a", 2)


async def test_the_reconcilers_timer_runs_alone_at_its_tick_also_when_it_fails() -> None:
    resync = FakeResync(tick=0.2)
    f = Fleet(resync=resync)
    try:
        f.enrol("a")
        await until(lambda: resync.calls >= 2, "two resyncs")
        # The timer alone: failover and the autoscaler ran once, at enrolment.
        assert f.runs("a") == 1 and f.autoscaler.ticks == {"a": 1}
        resync.fail = True
        calls = resync.calls
        await until(lambda: resync.calls >= calls + 2, "resyncs after a failure, at the tick")
        f.feed.poke(NS, "a")  # an input: failover and the autoscaler, not the timer's part
        await until(lambda: f.runs("a") == 2, "the input's run")
    finally:
        await f.close()
