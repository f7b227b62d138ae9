"""The failover shell with a fake LiveKit and fake workers: outages, restarts, webhooks."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from voicefleet_contract.one_agent import AGENT_NAME_ATTRIBUTE
from voicefleet_contract.sessions import RoomSession, SessionsReport
from voicefleet_operator import failover as fo
from voicefleet_operator.failover_loop import Failover, FailoverMetrics, RoomsSnapshot
from voicefleet_operator.fleet import Reading, WorkerPod
from voicefleet_operator.kube import KubeError
from voicefleet_operator.metrics import OperatorMetrics
from voicefleet_operator.spec import VoiceAgentSpec, parse_spec
from voicefleet_operator.webhook import secret_id

from .util import minimal_spec

CALLER = fo.Participant("caller", fo.KIND_STANDARD, joined_at=1)


class FakeKube:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, int | None]] = []

    def delete(self, path: str, grace_seconds: int | None = None) -> None:
        self.deleted.append((path, grace_seconds))

    def get(self, path: str) -> dict[str, Any] | None:
        assert path.endswith("/secrets/livekit"), path
        enc = {
            k: base64.b64encode(v.encode()).decode()
            for k, v in (("apiKey", "k"), ("apiSecret", "s" * 32))
        }
        return {"data": enc}


class FakeScraper:
    """What the `SessionFeed` would hold for each worker pod."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[RoomSession]] = {}
        self.dead: set[str] = set()

    def readings(self, pods: Sequence[WorkerPod]) -> dict[str, Reading]:
        out = {}
        for p in pods:
            if p.name in self.dead:
                out[p.name] = Reading(None, "refused")
            else:
                rooms = tuple(self.rooms.get(p.name, []))
                out[p.name] = Reading(SessionsReport(len(rooms), 10, False, rooms))
        return out


class FakeLiveKit:
    """One room; dispatches are recorded; `down` makes every call fail like an outage."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.participants: list[fo.Participant] = [CALLER]
        self.dispatches: list[fo.Dispatch] = [fo.Dispatch(agent, 5, "meta", "d0", fo.JOB_RUNNING)]
        self.down = False
        self.lost_answers = 0  # dispatches that reach LiveKit but whose answer is lost
        self.removed: list[str] = []  # participants the operator removed
        self.now = 0.0

    def _check(self) -> None:
        if self.down:
            raise aiohttp.ClientConnectionError("LiveKit is down")

    async def rooms(self) -> list[str]:
        self._check()
        return ["r1"]

    async def view(self, room: str) -> fo.RoomView:
        self._check()
        return fo.RoomView(room, True, tuple(self.participants), tuple(self.dispatches))

    async def dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        self._check()
        self.dispatches.append(
            fo.Dispatch(agent_name, self.now, metadata, f"d{len(self.dispatches)}")
        )
        if self.lost_answers:
            self.lost_answers -= 1
            raise aiohttp.ClientConnectionError("answer lost")
        return self.dispatches[-1].id

    async def delete_dispatch(self, room: str, dispatch_id: str) -> None:
        self._check()
        self.dispatches = [d for d in self.dispatches if d.id != dispatch_id]

    async def remove_participant(self, room: str, identity: str) -> None:
        self._check()
        self.removed.append(identity)
        self.participants = [p for p in self.participants if p.identity != identity]

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def setup(
    dry_run: bool = False,
) -> tuple[Failover, FakeLiveKit, FakeScraper, Clock, VoiceAgentSpec, OperatorMetrics]:
    spec = parse_spec("support", "voice", minimal_spec())
    clock = Clock()
    lk = FakeLiveKit(spec.agent_name)
    scraper = FakeScraper()
    metrics = OperatorMetrics(CollectorRegistry())
    f = Failover(
        FakeKube(),  # type: ignore[arg-type]
        FailoverMetrics(metrics),
        sweep_seconds=1000,
        clock=clock,
        rooms_factory=lambda *_: lk,
        dry_run=dry_run,
    )
    FEEDS[id(f)] = scraper
    return f, lk, scraper, clock, spec, metrics


def agent_old_left(spec: VoiceAgentSpec, reason: Any, at: float, event_id: str) -> Any:
    """LiveKit's `participant_left` for the agent `agent-old` of room r1 (`reason`: a
    livekit.protocol.models.DisconnectReason)."""
    from livekit.protocol.models import ParticipantInfo, Room
    from livekit.protocol.webhook import WebhookEvent

    return WebhookEvent(
        event="participant_left",
        id=event_id,
        created_at=int(at),
        room=Room(name="r1"),
        participant=ParticipantInfo(
            identity="agent-old",
            kind=ParticipantInfo.Kind.AGENT,
            attributes={AGENT_NAME_ATTRIBUTE: spec.agent_name},
            disconnect_reason=reason,
            joined_at=10,
        ),
    )


FEEDS: dict[int, FakeScraper] = {}  # each test's Failover -> its workers


def f_readings(f: Failover) -> dict[str, Reading]:
    return FEEDS[id(f)].readings([POD, SPARE])


POD = WorkerPod("w1", "127.0.0.9", True, False)
# A healthy worker with free slots: where a lost call can go (without one the call waits
# for capacity instead: test_a_call_waits_for_a_free_slot_*).
SPARE = WorkerPod("w2", "127.0.0.10", True, False)
SPARE_READING = {SPARE.name: Reading(SessionsReport(0, 10, False, ()))}
events: list[tuple[str, str, str]] = []


def post(kind: str, reason: str, message: str) -> None:
    events.append((kind, reason, message))


def value(metrics: OperatorMetrics, name: str, labels: Mapping[str, str]) -> float:
    got = metrics.registry.get_sample_value(name, dict(labels))
    return got or 0.0


async def tick(
    f: Failover, lk: FakeLiveKit, clock: Clock, spec: VoiceAgentSpec, dt: float = 1.0
) -> None:
    clock.t += dt
    lk.now = clock.t
    await f.tick(spec, [POD, SPARE], f_readings(f), post)


async def test_worker_death_during_a_livekit_outage_is_dispatched_once_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f, lk, scraper, clock, spec, metrics = setup()
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    await tick(f, lk, clock, spec)
    scraper.dead.add("w1")  # the worker process dies ...
    lk.down = True  # ... while LiveKit's API is unreachable
    with caplog.at_level(logging.INFO, logger="voicefleet_operator.failover_loop"):
        for _ in range(5):
            await tick(f, lk, clock, spec)
    assert len(lk.dispatches) == 1
    outage = [r for r in caplog.records if "LiveKit API" in r.getMessage()]
    assert len(outage) == 1, [r.getMessage() for r in outage]  # said once, not every tick
    lk.down = False
    lk.lost_answers = 1  # the first dispatch lands but its answer is lost
    for _ in range(3):
        await tick(f, lk, clock, spec)
    assert [d.metadata for d in lk.dispatches] == ["meta", "meta"]  # exactly one more
    # The new agent joins: the case closes as redispatched, counted once, with latency.
    lk.participants = [
        CALLER,
        fo.Participant("agent-new", fo.KIND_AGENT, spec.agent_name, clock.t + 1),
    ]
    await tick(f, lk, clock, spec)
    labels = {"namespace": "voice", "voiceagent": "support"}
    assert value(metrics, "voicefleet_failovers_total", {**labels, "outcome": "redispatched"}) == 1
    assert (
        value(metrics, "voicefleet_failover_orphans_found_total", {**labels, "source": "worker"})
        == 1
    )
    assert value(metrics, "voicefleet_failover_latency_seconds_count", labels) == 1
    assert events and events[-1][1] == "FailedOver"
    for _ in range(15):  # nothing more, however long it runs (the sweep included)
        await tick(f, lk, clock, spec)
    assert len(lk.dispatches) == 2


async def test_late_webhook_after_the_caller_hung_up_is_not_a_second_loss() -> None:
    """The worker view handled a crash and the caller then hung up; LiveKit's
    participant_left for the dead agent comes ~20 s after the crash. It is the same loss:
    no orphan, no `caller_gone` failover, no FailoverSkipped event."""
    f, lk, scraper, clock, spec, metrics = setup()
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    await tick(f, lk, clock, spec)
    scraper.dead.add("w1")
    await tick(f, lk, clock, spec)
    assert len(lk.dispatches) == 2
    lk.participants.append(fo.Participant("agent-new", fo.KIND_AGENT, spec.agent_name, clock.t))
    await tick(f, lk, clock, spec)
    lk.participants = [p for p in lk.participants if p.kind == fo.KIND_AGENT]  # hung up

    from livekit.protocol.models import DisconnectReason

    before = len(events)
    late = agent_old_left(spec, DisconnectReason.CONNECTION_TIMEOUT, clock.t, "EV-late")
    await f.on_webhook(late, secret_id("k", "s" * 32))
    for _ in range(3):
        await tick(f, lk, clock, spec)
    labels = {"namespace": "voice", "voiceagent": "support"}
    found = sum(
        value(metrics, "voicefleet_failover_orphans_found_total", {**labels, "source": src})
        for src in ("worker", "pod", "webhook", "sweep")
    )
    assert found == 1
    assert value(metrics, "voicefleet_failovers_total", {**labels, "outcome": "caller_gone"}) == 0
    assert value(metrics, "voicefleet_failovers_total", {**labels, "outcome": "redispatched"}) == 1
    assert len(events) == before
    assert len(lk.dispatches) == 2


async def test_operator_restart_with_a_pending_dispatch_does_not_dispatch_again() -> None:
    f, lk, _scraper, clock, spec, _ = setup()
    # Before the restart: the old agent left (crash) and a dispatch was made at 99.
    lk.dispatches.append(fo.Dispatch(spec.agent_name, 99.5, "meta", "d1"))
    f.sweep_seconds = 0  # sweep every tick
    for _ in range(5):
        await tick(f, lk, clock, spec)
    assert len(lk.dispatches) == 2  # waits for the pending dispatch (join timeout 10 s)


async def test_webhook_matches_credentials_and_agent_name() -> None:
    f, lk, _, clock, spec, _ = setup()
    await tick(f, lk, clock, spec)  # learns the VoiceAgent and its credentials
    assert f.known_credentials() == {"k": {"s" * 32}}

    from livekit.protocol.models import DisconnectReason, ParticipantInfo, Room
    from livekit.protocol.webhook import WebhookEvent

    def left(agent_name: str) -> WebhookEvent:
        return WebhookEvent(
            event="participant_left",
            id="EV",
            created_at=int(clock.t),
            room=Room(name="r1"),
            participant=ParticipantInfo(
                identity="agent-old",
                kind=ParticipantInfo.Kind.AGENT,
                attributes={AGENT_NAME_ATTRIBUTE: agent_name},
                disconnect_reason=DisconnectReason.CONNECTION_TIMEOUT,
                joined_at=10,
            ),
        )

    await f.on_webhook(left(spec.agent_name), secret_id("k", "other-secret"))  # other deployment
    await f.on_webhook(left("someone-else"), secret_id("k", "s" * 32))  # other agent
    await tick(f, lk, clock, spec)
    assert len(lk.dispatches) == 1
    await f.on_webhook(left(spec.agent_name), secret_id("k", "s" * 32))
    await tick(f, lk, clock, spec)
    assert len(lk.dispatches) == 2


async def test_failover_disabled_does_nothing() -> None:
    f, lk, scraper, clock, spec, _ = setup()
    off = replace(
        spec, config=replace(spec.config, failover=replace(spec.config.failover, enabled=False))
    )
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    await tick(f, lk, clock, off)
    scraper.dead.add("w1")
    f.sweep_seconds = 0
    for _ in range(5):
        await tick(f, lk, clock, off)
    assert len(lk.dispatches) == 1
    assert f.known_credentials() == {}


async def test_deliberate_end_with_the_caller_still_there_is_not_an_orphan() -> None:
    f, lk, scraper, clock, spec, metrics = setup()
    f.sweep_seconds = 0  # sweep every tick
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    await tick(f, lk, clock, spec)
    # The agent ends the call: it leaves at once and its worker lists the room no more; the
    # caller stays. LiveKit still has the job RUNNING.
    scraper.rooms["w1"] = []
    lk.participants = [CALLER]
    for _ in range(20):
        await tick(f, lk, clock, spec)
    assert lk.dispatches == []  # its dispatch deleted: no sweep, even after a restart
    assert (
        value(
            metrics,
            "voicefleet_failovers_total",
            {"namespace": "voice", "voiceagent": "support", "outcome": "redispatched"},
        )
        == 0
    )


async def test_deliberate_end_seen_late_by_the_worker_view_and_by_webhook() -> None:
    from livekit.protocol.models import DisconnectReason, ParticipantInfo, Room
    from livekit.protocol.webhook import WebhookEvent

    f, lk, scraper, clock, spec, _ = setup()
    f.sweep_seconds = 0
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    await tick(f, lk, clock, spec)
    scraper.rooms["w1"] = []
    lk.participants = [CALLER]
    await f.on_webhook(
        WebhookEvent(
            event="participant_left",
            id="EV",
            created_at=int(clock.t),
            room=Room(name="r1"),
            participant=ParticipantInfo(
                identity="agent-old",
                kind=ParticipantInfo.Kind.AGENT,
                attributes={AGENT_NAME_ATTRIBUTE: spec.agent_name},
                disconnect_reason=DisconnectReason.CLIENT_INITIATED,
            ),
        ),
        secret_id("k", "s" * 32),
    )
    # A slow operator: the next ticks come after the vanish grace.
    for _ in range(5):
        await tick(f, lk, clock, spec, dt=5)
    assert lk.dispatches == []


# --- many VoiceAgents: shared Secret reads and sweep snapshots ---------------------------


class Deployment:
    """A LiveKit deployment with many rooms; counts every API call."""

    def __init__(self) -> None:
        self.views: dict[str, fo.RoomView] = {}
        self.listings = 0
        self.viewed: dict[str, int] = {}
        self.dispatched: list[tuple[str, str]] = []
        self.down = False
        self.now = 0.0

    async def rooms(self) -> list[str]:
        self.listings += 1
        await asyncio.sleep(0.001)  # in flight while other VoiceAgents ask
        if self.down:
            raise aiohttp.ClientConnectionError("LiveKit is down")
        return list(self.views)

    async def view(self, room: str) -> fo.RoomView:
        self.viewed[room] = self.viewed.get(room, 0) + 1
        await asyncio.sleep(0)
        if self.down:
            raise aiohttp.ClientConnectionError("LiveKit is down")
        return self.views.get(room, fo.RoomView(room, False))

    async def dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        self.dispatched.append((room, agent_name))
        v = self.views[room]
        d = fo.Dispatch(agent_name, self.now, metadata, f"d{len(self.dispatched)}")
        self.views[room] = replace(v, dispatches=(*v.dispatches, d))
        return d.id

    async def delete_dispatch(self, room: str, dispatch_id: str) -> None:
        pass

    async def remove_participant(self, room: str, identity: str) -> None:
        pass

    async def close(self) -> None:
        pass


def room(name: str, agent: str, served: bool) -> fo.RoomView:
    """A call of `agent` (dispatched long ago): its agent in the room, or gone."""
    people = [CALLER] + ([fo.Participant(f"{agent}-1", fo.KIND_AGENT, agent, 2)] if served else [])
    return fo.RoomView(name, True, tuple(people), (fo.Dispatch(agent, 1, "m", f"{name}-d"),))


class Secrets:
    """The API server's Secrets; counts GETs per Secret (read in a thread: to_thread)."""

    def __init__(self) -> None:
        self.values = {"livekit": ("k", "s" * 32), "other": ("k2", "t" * 32)}
        self.gets: dict[str, int] = {}
        self.error: KubeError | None = None

    def get(self, path: str) -> dict[str, Any] | None:
        name = path.rsplit("/", 1)[1]
        self.gets[name] = self.gets.get(name, 0) + 1
        time.sleep(0.02)  # in flight while other VoiceAgents ask
        if self.error is not None:
            raise self.error
        if name not in self.values:
            return None
        key, secret = self.values[name]
        pairs = (("apiKey", key), ("apiSecret", secret))
        enc = {k: base64.b64encode(v.encode()).decode() for k, v in pairs}
        return {"data": enc}


def fleet(
    names: Sequence[str], secret: str = "livekit"
) -> tuple[Failover, Deployment, Secrets, Clock, list[VoiceAgentSpec], OperatorMetrics]:
    clock = Clock()
    lk = Deployment()
    kube = Secrets()
    metrics = OperatorMetrics(CollectorRegistry())
    f = Failover(
        kube,  # type: ignore[arg-type]
        FailoverMetrics(metrics),
        sweep_seconds=10,
        clock=clock,
        rooms_factory=lambda *_: lk,
    )
    specs = [agent_spec(n, secret) for n in names]
    return f, lk, kube, clock, specs, metrics


def agent_spec(name: str, secret: str = "livekit") -> VoiceAgentSpec:
    raw = minimal_spec()
    raw["livekit"]["credentialsSecret"] = secret
    return parse_spec(name, "voice", raw)


async def tick_all(
    f: Failover, lk: Deployment, clock: Clock, specs: Sequence[VoiceAgentSpec], dt: float = 1.0
) -> None:
    """One tick of every VoiceAgent, all at once (their daemons run concurrently)."""
    clock.t += dt
    lk.now = clock.t
    await asyncio.gather(*(f.tick(s, [SPARE], SPARE_READING, post) for s in specs))


async def test_voiceagents_of_one_deployment_share_one_sweep_per_period() -> None:
    names = [f"agent{i}" for i in range(20)]
    f, lk, _, clock, specs, metrics = fleet(names)
    for i in range(30):
        lk.views[f"room{i}"] = room(f"room{i}", names[i % 20], served=True)
    for _ in range(10):  # one sweep period (10 s) of ticks: one listing, one view per room
        await tick_all(f, lk, clock, specs)
    assert lk.listings == 1
    assert lk.viewed == {r: 1 for r in lk.views}
    await tick_all(f, lk, clock, specs)  # the next period
    assert lk.listings == 2
    assert lk.viewed == {r: 2 for r in lk.views}
    # One at a time (daemons that do not tick together) share it the same way.
    clock.t += 10
    for s in specs:
        await f.tick(s, [SPARE], SPARE_READING, post)
    assert lk.listings == 3
    assert lk.viewed == {r: 3 for r in lk.views}
    assert lk.dispatched == []
    assert metrics.registry.get_sample_value("voicefleet_failover_orphans_found_total") is None


async def test_another_deployment_is_swept_on_its_own() -> None:
    f, lk, _, clock, specs, _ = fleet(["a", "b"])
    other = agent_spec("c", secret="other")  # other credentials: another deployment
    lk.views["r"] = room("r", "a", served=True)
    await tick_all(f, lk, clock, [*specs, other])
    assert lk.listings == 2
    assert lk.viewed == {"r": 2}


async def test_orphans_are_found_per_voiceagent_from_the_shared_snapshot() -> None:
    f, lk, _, clock, specs, metrics = fleet(["alpha", "beta", "gamma"])
    lk.views["ra"] = room("ra", "alpha", served=False)  # alpha's agent is gone
    lk.views["rb"] = room("rb", "beta", served=False)  # and beta's
    lk.views["rc"] = room("rc", "gamma", served=True)
    for _ in range(11):  # two sweeps: the second finds the rooms agentless for > 5 s
        await tick_all(f, lk, clock, specs)
    assert lk.listings == 2
    assert sorted(lk.dispatched) == [("ra", "alpha"), ("rb", "beta")]
    for name, found in (("alpha", 1), ("beta", 1), ("gamma", 0)):
        labels = {"namespace": "voice", "voiceagent": name, "source": "sweep"}
        assert value(metrics, "voicefleet_failover_orphans_found_total", labels) == found


async def test_a_recovery_after_the_snapshot_is_not_a_second_orphan() -> None:
    """A VoiceAgent may judge a snapshot another one took seconds ago: a room it shows
    orphaned is read again before a case is opened."""
    f, lk, _, clock, (a, b), metrics = fleet(["alpha", "beta"])
    lk.views["rb"] = room("rb", "beta", served=False)
    await tick_all(f, lk, clock, [a, b])  # both sweep: beta's agent absent from now on
    clock.t += 10
    await f.tick(a, [], {}, post)  # alpha takes the next snapshot: rb agentless for 10 s
    # Meanwhile something else (beta's worker view, a webhook) dispatched a new agent.
    lk.views["rb"] = replace(
        lk.views["rb"], dispatches=(*lk.views["rb"].dispatches, fo.Dispatch("beta", clock.t + 1))
    )
    clock.t += 2
    await f.tick(b, [], {}, post)  # beta's sweep: the 2 s old snapshot
    assert lk.listings == 2
    assert lk.dispatched == []
    labels = {"namespace": "voice", "voiceagent": "beta", "source": "sweep"}
    assert value(metrics, "voicefleet_failover_orphans_found_total", labels) == 0


async def test_a_failed_snapshot_is_shared_retried_a_period_later_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """LiveKit down and no call in question: one failed listing for all ten VoiceAgents,
    tried again at the next sweep (not once a second each), and each says so once."""
    names = [f"agent{i}" for i in range(10)]
    f, lk, _, clock, specs, _ = fleet(names)
    lk.views["r"] = room("r", "agent0", served=True)
    lk.down = True
    with caplog.at_level(logging.INFO, logger="voicefleet_operator.failover_loop"):
        for _ in range(3):
            await tick_all(f, lk, clock, specs)
        assert lk.listings == 1  # shared by all ten, and not again within the period
        assert await f.tick(specs[0], [SPARE], SPARE_READING, post) == pytest.approx(8.0)
        lk.down = False
        await tick_all(f, lk, clock, specs, dt=8.0)  # the next sweep
    assert lk.listings == 2
    down = [r for r in caplog.records if "retrying" in r.getMessage()]
    back = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert len(down) == len(back) == 10  # once per VoiceAgent per outage


async def test_voiceagents_sharing_a_secret_share_one_read_per_period() -> None:
    f, lk, kube, clock, specs, _ = fleet(["a", "b"])
    other = agent_spec("c", secret="other")
    await tick_all(f, lk, clock, [*specs, other])
    assert kube.gets == {"livekit": 1, "other": 1}
    for _ in range(29):
        await tick_all(f, lk, clock, [*specs, other])
    assert kube.gets == {"livekit": 1, "other": 1}
    await tick_all(f, lk, clock, [*specs, other])  # 30 s on
    assert kube.gets == {"livekit": 2, "other": 2}
    assert f.known_credentials() == {"k": {"s" * 32}, "k2": {"t" * 32}}


async def test_concurrent_first_reads_share_one_secret_get_and_one_listing() -> None:
    f, lk, kube, clock, specs, _ = fleet([f"agent{i}" for i in range(50)])
    lk.views["r"] = room("r", "agent0", served=True)
    await tick_all(f, lk, clock, specs)  # 50 daemons start at once
    assert kube.gets == {"livekit": 1}
    assert lk.listings == 1
    assert lk.viewed == {"r": 1}


async def test_a_failed_secret_read_keeps_the_credentials_and_does_not_log_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f, lk, kube, clock, specs, _ = fleet(["a", "b"])
    await tick_all(f, lk, clock, specs)
    kube.error = KubeError(503, "ServiceUnavailable", "etcd is down")
    with caplog.at_level(logging.INFO, logger="voicefleet_operator.failover_loop"):
        await tick_all(f, lk, clock, specs, dt=30)
        assert kube.gets == {"livekit": 2}
        for _ in range(4):  # retried after 5 s, not every tick
            await tick_all(f, lk, clock, specs)
        assert kube.gets == {"livekit": 2}
        await tick_all(f, lk, clock, specs)
        assert kube.gets == {"livekit": 3}
    assert f.known_credentials() == {"k": {"s" * 32}}  # still in use
    warned = [r.getMessage() for r in caplog.records if "Secret" in r.getMessage()]
    said = "failover: cannot read the LiveKit Secret voice/livekit: 503 ServiceUnavailable: "
    assert warned == [said + "etcd is down"] * 2  # once per failed read, not per VoiceAgent
    assert "s" * 32 not in caplog.text
    assert all("s" * 32 not in repr(s) for s in f._states.values())
    kube.error = None
    kube.values["livekit"] = ("k", "n" * 32)  # rotated
    await tick_all(f, lk, clock, specs, dt=5)
    assert f.known_credentials() == {"k": {"n" * 32}}


async def test_a_secret_created_after_its_voiceagent_is_picked_up_within_seconds() -> None:
    f, lk, kube, clock, (spec,), _ = fleet(["late"], secret="missing")
    for _ in range(5):
        await tick_all(f, lk, clock, [spec])
    assert kube.gets == {"missing": 1}  # not every tick
    assert f.known_credentials() == {}
    kube.values["missing"] = ("k3", "u" * 32)
    await tick_all(f, lk, clock, [spec])
    assert f.known_credentials() == {"k3": {"u" * 32}}


def test_judging_only_the_rooms_dispatched_to_an_agent_finds_what_judging_all_does() -> None:
    """The snapshot hands each VoiceAgent the rooms with a dispatch of its agent only:
    `orphans_from_sweep` ignores every other room, so nothing changes but the cost."""
    agents = ["a", "b", "c"]
    views = []
    for i in range(200):
        dispatched = tuple(
            fo.Dispatch(agents[(i + k) % 3], (i * 7) % 30, "m", f"d{i}-{k}", (i + k) % 4)
            for k in range(i % 4)  # none, one, two or three dispatches
        )
        people = tuple(
            [CALLER] * (i % 2)
            + [fo.Participant(f"x{i}", fo.KIND_AGENT, agents[i % 3], 1)] * ((i // 5) % 2)
        )
        views.append(fo.RoomView(f"r{i}", i % 11 != 0, people, dispatched))
    snap = RoomsSnapshot.of(100.0, views)
    assert snap.names == {v.room for v in views}
    absent = {(f"r{i}", a): 100.0 - i % 9 for i in range(0, 200, 3) for a in agents}
    for name in [*agents, "nobody"]:
        everything = fo.orphans_from_sweep(views, [name], absent, 104.0, fo.Policy())
        own = fo.orphans_from_sweep(snap.dispatched(name), [name], absent, 104.0, fo.Policy())
        assert own == everything
    assert sum(len(fo.orphans_from_sweep(views, [a], absent, 104, fo.Policy())[0]) for a in agents)


async def test_a_call_livekit_could_not_place_waits_for_a_slot_and_is_counted_as_demand() -> None:
    """Issue 13's deadlock: every worker full, a caller joins, LiveKit drops the job (no
    job on the dispatch). The caller's join (webhook) is watched; the call is found
    unplaced within place_seconds, waits (said once: an Event, the metrics), counts as
    demand, and is dispatched exactly once when a worker has a slot."""
    from livekit.protocol.models import ParticipantInfo, Room
    from livekit.protocol.webhook import WebhookEvent

    f, lk, scraper, clock, spec, metrics = setup()
    lk.dispatches = [fo.Dispatch(spec.agent_name, clock.t, "meta", "d0")]  # never placed
    scraper.rooms["w1"] = [RoomSession(f"busy{i}", f"j{i}", 1.0, f"a{i}") for i in range(10)]
    full = [POD]
    await f.tick(spec, full, f_readings(f), post)  # learns the VoiceAgent
    joined = WebhookEvent(
        event="participant_joined",
        id="EV-join",
        created_at=int(clock.t),
        room=Room(name="r1"),
        participant=ParticipantInfo(identity="caller", kind=ParticipantInfo.Kind.STANDARD),
    )
    await f.on_webhook(joined, secret_id("k", "s" * 32))
    before = len(events)
    labels = {"namespace": "voice", "voiceagent": "support"}
    for _ in range(30):  # 30 s with every worker full: the call waits, said once
        clock.t += 1
        lk.now = clock.t
        await f.tick(spec, full, f_readings(f), post)
    assert f.waiting("voice", "support") == 1
    assert len(lk.dispatches) == 1  # nothing dispatched into a full fleet
    said = [e for e in events[before:] if e[1] == "WaitingForCapacity"]
    assert len(said) == 1 and "no worker has a free slot" in said[0][2], events[before:]
    assert value(metrics, "voicefleet_calls_unplaced_total", labels) == 1
    assert value(metrics, "voicefleet_calls_waiting", labels) == 1
    assert (
        value(metrics, "voicefleet_failover_orphans_found_total", {**labels, "source": "sweep"})
        == 0
    )

    # A worker with room turns up (the autoscaler added it): exactly one dispatch.
    for _ in range(3):
        clock.t += 1
        lk.now = clock.t
        await f.tick(spec, [POD, SPARE], f_readings(f), post)
    assert [d.id for d in lk.dispatches] == ["d0", "d1"]
    lk.participants.append(fo.Participant("agent-new", fo.KIND_AGENT, spec.agent_name, clock.t))
    clock.t += 1
    await f.tick(spec, [POD, SPARE], f_readings(f), post)
    assert f.waiting("voice", "support") == 0
    assert value(metrics, "voicefleet_calls_waiting", labels) == 0
    assert events[-1][1] == "CallPlaced", events[-1]
    # Not a failover: no agent was lost.
    assert value(metrics, "voicefleet_failovers_total", {**labels, "outcome": "redispatched"}) == 0


async def test_a_worker_the_operator_cannot_reach_but_the_kubelet_finds_ready_keeps_its_calls() -> (
    None
):
    """Issue 13, item 2: a network blip between the operator and a node (reads time out or
    the host is unreachable) is not a death: no loss, no dispatch, no second agent."""
    f, lk, scraper, clock, spec, metrics = setup()
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    await tick(f, lk, clock, spec)
    for error in ("timeout", "unreachable"):
        for _ in range(30):
            clock.t += 1
            lk.now = clock.t
            readings = {POD.name: Reading(None, error), **SPARE_READING}
            await f.tick(spec, [POD, SPARE], readings, post)
    assert len(lk.dispatches) == 1 and lk.removed == []
    assert f.kube.deleted == []  # type: ignore[attr-defined]  # a blip ends no worker
    labels = {"namespace": "voice", "voiceagent": "support"}
    for src in ("worker", "hung", "pod"):
        assert (
            value(metrics, "voicefleet_failover_orphans_found_total", {**labels, "source": src})
            == 0
        )


async def test_a_hung_worker_is_failed_over_with_its_agent_removed_first() -> None:
    """Issue 13, item 3: the kubelet's readiness probe fails (the pod turns not ready) and
    the operator's fresh read gets no answer either: the worker hangs. Its agent, still in
    the room, is removed before the new one is dispatched; its PARTICIPANT_REMOVED notice
    is not taken for the agent ending the call."""
    from livekit.protocol.models import DisconnectReason

    f, lk, scraper, clock, spec, metrics = setup()
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    await tick(f, lk, clock, spec)
    hung_pod = replace(POD, ready=False)
    clock.t += 1
    lk.now = clock.t
    readings = {POD.name: Reading(None, "timeout"), **SPARE_READING}
    await f.tick(spec, [hung_pod, SPARE], readings, post)
    assert lk.removed == ["agent-old"]
    assert [d.id for d in lk.dispatches] == ["d0", "d1"]
    # ... and the hung worker is ended, once: LiveKit would keep offering it calls
    hung_path = f"/api/v1/namespaces/voice/pods/{POD.name}"
    assert f.kube.deleted == [(hung_path, 1)]  # type: ignore[attr-defined]
    removed = agent_old_left(spec, DisconnectReason.PARTICIPANT_REMOVED, clock.t, "EV-removed")
    await f.on_webhook(removed, secret_id("k", "s" * 32))
    lk.participants.append(fo.Participant("agent-new", fo.KIND_AGENT, spec.agent_name, clock.t))
    for _ in range(3):
        clock.t += 1
        lk.now = clock.t
        await f.tick(spec, [hung_pod, SPARE], readings, post)
    assert [d.id for d in lk.dispatches] == ["d0", "d1"]  # the new dispatch was kept
    assert f.kube.deleted == [(hung_path, 1)]  # type: ignore[attr-defined]
    labels = {"namespace": "voice", "voiceagent": "support"}
    assert (
        value(metrics, "voicefleet_failover_orphans_found_total", {**labels, "source": "hung"}) == 1
    )
    assert value(metrics, "voicefleet_failovers_total", {**labels, "outcome": "redispatched"}) == 1


async def test_a_dry_run_logs_what_failover_would_do_and_does_none_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--dry-run: the hung worker above, judged the same way, but nothing is written:
    no agent removed, no dispatch, no pod deleted, no Event; the log says each step."""
    f, lk, scraper, clock, spec, metrics = setup(dry_run=True)
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    await tick(f, lk, clock, spec)
    before = [d.id for d in lk.dispatches]
    events.clear()
    hung_pod = replace(POD, ready=False)
    readings = {POD.name: Reading(None, "timeout"), **SPARE_READING}
    caplog.set_level(logging.INFO, logger="voicefleet_operator.failover_loop")
    for _ in range(3):
        clock.t += 1
        lk.now = clock.t
        await f.tick(spec, [hung_pod, SPARE], readings, post)
    assert lk.removed == [] and [d.id for d in lk.dispatches] == before
    assert f.kube.deleted == []  # type: ignore[attr-defined]
    assert events == []
    said = caplog.text
    assert "dry run: failover voice/support would end hung worker w1" in said
    assert "dry run: would remove participant agent-old from room r1" in said
    assert f"dry run: would dispatch agent {spec.agent_name} to room r1" in said
    assert said.count("would end hung worker") == 1  # once, not every tick
    # the decision is counted as it would be
    labels = {"namespace": "voice", "voiceagent": "support", "source": "hung"}
    assert value(metrics, "voicefleet_failover_orphans_found_total", labels) == 1


async def test_a_voiceagent_that_yields_its_agent_name_does_no_failover() -> None:
    """Another VoiceAgent holds the agent name on this LiveKit server (names.py): no
    dispatch, no webhook acts for it, until the holder lets go."""
    from voicefleet_operator.names import AgentNames, Claim, normalise_url

    f, lk, scraper, clock, spec, _ = setup()
    url = normalise_url(spec.livekit.url, spec.namespace)
    me = Claim("voice", "support", url, spec.agent_name, "2026-02-01T00:00:00Z")
    holder = Claim("prod", "support", url, spec.agent_name, "2026-01-01T00:00:00Z", holds=True)
    claims: dict[tuple[str, str], list[Claim]] = {me.key: [me, holder]}
    held = {("prod", "support"): [me.key]}
    f.names = AgentNames()
    f.names.attach(claims, held, asyncio.get_running_loop())
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    await tick(f, lk, clock, spec)
    scraper.dead.add("w1")  # its worker dies mid-call
    f.sweep_seconds = 0
    for _ in range(5):
        await tick(f, lk, clock, spec)
    assert len(lk.dispatches) == 1  # the holder's failover is the one that acts
    assert f.known_credentials() == {} and f.clients == 0
    # The holder goes: this one's failover runs again, within a tick.
    claims[me.key] = [me]
    del held[("prod", "support")]
    scraper.dead.discard("w1")
    await tick(f, lk, clock, spec)
    assert f.known_credentials() == {"k": {"s" * 32}} and f.clients == 1


async def test_livekit_clients_no_voiceagent_uses_are_closed() -> None:
    closed: list[str] = []

    class Client(Deployment):
        def __init__(self, url: str) -> None:
            super().__init__()
            self.url = url

        async def close(self) -> None:
            closed.append(self.url)

    made: list[Client] = []

    def factory(url: str, key: str, secret: str) -> Client:
        made.append(Client(url))
        return made[-1]

    f, _, _, _, specs, _ = fleet(["a", "b"])
    f.rooms_factory = factory
    for s in specs:
        await f.tick(s, [SPARE], SPARE_READING, post)
    assert len(made) == 1 and f.clients == 1  # one deployment, one client
    f.forget("voice", "a")
    await asyncio.sleep(0)
    assert closed == []  # b still uses it
    # b moves to another LiveKit: the old client is closed, a new one made.
    moved = replace(specs[1], livekit=replace(specs[1].livekit, url="ws://other:7880"))
    await f.tick(moved, [SPARE], SPARE_READING, post)
    await asyncio.sleep(0)
    assert closed == [made[0].url] and len(made) == 2 and f.clients == 1
    f.forget("voice", "b")
    await asyncio.sleep(0)
    assert closed == [made[0].url, "ws://other:7880"] and f.clients == 0


async def test_a_restarted_worker_container_loses_its_calls_though_it_answers_at_once() -> None:
    """The kubelet restarts a crashed container at once, on the same pod IP: the new
    process may answer /sessions (with no rooms) before the feed ever saw a refusal. The
    rise of its restartCount says the old process died: its calls are lost now, not when
    LiveKit times the dead agent out (~20 s) and sends participant_left."""
    f, lk, scraper, clock, spec, metrics = setup()
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    await tick(f, lk, clock, spec)
    scraper.rooms["w1"] = []  # the new process serves nothing
    restarted = replace(POD, restarts=1)
    clock.t += 1
    lk.now = clock.t
    await f.tick(spec, [restarted, SPARE], FEEDS[id(f)].readings([restarted, SPARE]), post)
    # The dead agent still sits in the room: removed first, then one new dispatch.
    assert lk.removed == ["agent-old"]
    assert [d.metadata for d in lk.dispatches] == ["meta", "meta"]
    labels = {"namespace": "voice", "voiceagent": "support"}
    assert (
        value(metrics, "voicefleet_failover_orphans_found_total", {**labels, "source": "worker"})
        == 1
    )
    for _ in range(5):  # the same restart count again: nothing more
        clock.t += 1
        lk.now = clock.t
        await f.tick(spec, [restarted, SPARE], FEEDS[id(f)].readings([restarted, SPARE]), post)
    assert len(lk.dispatches) == 2


async def test_a_call_whose_worker_dies_between_two_ticks_is_lost_by_the_worker_view() -> None:
    """The feed reads a new call and then the worker's death before the loop ticks again (a
    tick waiting on LiveKit, a busy event loop): the tick sees only the refusal. What the
    feed observed in between is recorded at once, so the call is failed over now, not
    when LiveKit's webhook tells of the dead agent ~20 s later."""
    f, lk, scraper, clock, spec, metrics = setup()
    await tick(f, lk, clock, spec)  # the worker serves nothing yet
    lk.participants.append(fo.Participant("agent-old", fo.KIND_AGENT, spec.agent_name, 10))
    scraper.rooms["w1"] = [RoomSession("r1", "j1", 10.0, "agent-old")]
    f.observe("voice", "support", [POD, SPARE], f_readings(f))  # the call, as read
    scraper.dead.add("w1")
    f.observe("voice", "support", [POD, SPARE], f_readings(f))  # its death, as read
    await tick(f, lk, clock, spec)
    assert lk.removed == ["agent-old"]
    assert [d.metadata for d in lk.dispatches] == ["meta", "meta"]
    labels = {"namespace": "voice", "voiceagent": "support", "source": "worker"}
    assert value(metrics, "voicefleet_failover_orphans_found_total", labels) == 1
    # Another VoiceAgent's readings, or one this operator has no state for, change nothing.
    f.observe("voice", "other", [POD], f_readings(f))
    for _ in range(5):
        await tick(f, lk, clock, spec)
    assert len(lk.dispatches) == 2


@pytest.mark.parametrize(
    ("before", "now", "restarted"),
    [
        ({}, {"a": 3}, []),  # first seen (an operator restart): nothing to compare
        ({"a": 0}, {"a": 0}, []),
        ({"a": 0}, {"a": 1}, ["a"]),
        ({"a": 2, "b": 0}, {"a": 2, "b": 4}, ["b"]),
        ({"a": 1}, {"a": 0}, []),  # a recreated pod of the same name starts again at 0
        ({"a": 1}, {}, []),  # gone: the pod watch's business
    ],
)
def test_restarted_workers(
    before: dict[str, int], now: dict[str, int], restarted: list[str]
) -> None:
    assert fo.restarted_workers(before, now) == restarted


def test_index_pod_reads_the_worker_containers_restart_count() -> None:
    from voicefleet_contract import APP_NAME, LABEL_INSTANCE, LABEL_NAME
    from voicefleet_operator.fleet import index_pod

    status = {
        "podIP": "10.0.0.5",
        "containerStatuses": [
            {"name": "agent", "restartCount": 2},
            {"name": "sidecar", "restartCount": 7},  # not the worker: its calls go on
        ],
    }
    labels = {LABEL_NAME: APP_NAME, LABEL_INSTANCE: "support"}
    entry = index_pod("voice", "w1", labels, status, {})
    pod = WorkerPod("w1", "10.0.0.5", False, False, 2, tuple(sorted(labels.items())))
    assert entry == {("voice", "support"): pod}
