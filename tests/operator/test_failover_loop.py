"""The failover shell with a fake LiveKit and fake workers: outages, restarts, webhooks."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from voicefleet_contract.sessions import RoomSession, SessionsReport
from voicefleet_operator import failover as fo
from voicefleet_operator.autoscale_loop import WorkerPod
from voicefleet_operator.failover_loop import Failover, FailoverMetrics
from voicefleet_operator.feed import Reading
from voicefleet_operator.metrics import OperatorMetrics
from voicefleet_operator.spec import VoiceAgentSpec, parse_spec
from voicefleet_operator.webhook import secret_id

from .util import minimal_spec

CALLER = fo.Participant("caller", fo.KIND_STANDARD, joined_at=1)


class FakeKube:
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

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def setup() -> tuple[Failover, FakeLiveKit, FakeScraper, Clock, VoiceAgentSpec, OperatorMetrics]:
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
    )
    FEEDS[id(f)] = scraper
    return f, lk, scraper, clock, spec, metrics


FEEDS: dict[int, FakeScraper] = {}  # each test's Failover -> its workers


def f_readings(f: Failover) -> dict[str, Reading]:
    return FEEDS[id(f)].readings([POD])


POD = WorkerPod("w1", "127.0.0.9", True, False)
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
    await f.tick(spec, [POD], f_readings(f), post)


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

    from livekit.protocol.models import DisconnectReason, ParticipantInfo, Room
    from livekit.protocol.webhook import WebhookEvent

    before = len(events)
    late = WebhookEvent(
        event="participant_left",
        id="EV-late",
        created_at=int(clock.t),
        room=Room(name="r1"),
        participant=ParticipantInfo(
            identity="agent-old",
            kind=ParticipantInfo.Kind.AGENT,
            attributes={fo.AGENT_NAME_ATTRIBUTE: spec.agent_name},
            disconnect_reason=DisconnectReason.CONNECTION_TIMEOUT,
            joined_at=10,
        ),
    )
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
                attributes={fo.AGENT_NAME_ATTRIBUTE: agent_name},
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
                attributes={fo.AGENT_NAME_ATTRIBUTE: spec.agent_name},
                disconnect_reason=DisconnectReason.CLIENT_INITIATED,
            ),
        ),
        secret_id("k", "s" * 32),
    )
    # A slow operator: the next ticks come after the vanish grace.
    for _ in range(5):
        await tick(f, lk, clock, spec, dt=5)
    assert lk.dispatches == []
