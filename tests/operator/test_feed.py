"""The session feed against real fake-worker processes on loopback (no cluster needed)."""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from voicefleet_contract.sessions import LongPollLimit, parse_sessions
from voicefleet_operator.daemons import paused_for_a_peer
from voicefleet_operator.feed import SessionFeed, error_reason
from voicefleet_operator.fleet import Reading, WorkerPod
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.procs import wait_for
from voicefleet_worker.endpoint import MetricsServer, make_app
from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.sessions import SessionRegistry


def port_open(ip: str, port: int) -> bool:
    with socket.create_connection((ip, port), 0.2):
        return True


def start_fake(
    ip: str, metrics: int, health: int, active: int, capacity: int
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, POD_IP=ip, VOICEFLEET_METRICS_PORT=str(metrics), VOICEFLEET_HEALTH_PORT=str(health),
               FAKE_ACTIVE_SESSIONS=str(active), FAKE_CAPACITY=str(capacity))  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "voicefleet_testbed.fake_worker"], env=env)
    wait_for(lambda: port_open(ip, metrics), 10, "fake worker")
    return proc


@dataclass
class Target:
    name: str
    ip: str
    port: int
    proc: subprocess.Popen[bytes]

    def pod(self) -> WorkerPod:
        return WorkerPod(self.name, self.ip, True, False)


@pytest.fixture
def fakes() -> Iterator[list[Target]]:
    targets = []
    port = free_port("127.0.9.1")  # the same on every pod IP, as in a cluster
    for i, active in enumerate((2, 5)):
        ip = f"127.0.9.{i + 1}"
        targets.append(Target(f"w{i}", ip, port, start_fake(ip, port, free_port(ip), active, 8)))
    yield targets
    for t in targets:
        t.proc.kill()
        t.proc.wait()


@pytest.fixture
async def feed(fakes: list[Target]) -> AsyncIterator[SessionFeed]:
    f = SessionFeed(wait_seconds=2.0, timeout=0.3, retry_seconds=0.2, port=fakes[0].port)
    yield f
    await f.close()


async def until(
    feed: SessionFeed, check: Callable[[dict[str, Reading]], bool], what: str, timeout: float = 10
) -> dict[str, Reading]:
    """Wait, woken by the feed (no sleeps), until `check` holds for the VoiceAgent's readings."""
    wake = feed.subscribe("ns", "va")
    try:
        async with asyncio.timeout(timeout):
            while True:
                wake.clear()
                got = feed.readings("ns", "va")
                if check(got):
                    return got
                await wake.wait()
    except TimeoutError:
        raise AssertionError(
            f"{what}: not within {timeout}s; last {feed.readings('ns', 'va')}"
        ) from None
    finally:
        feed.unsubscribe("ns", "va", wake)


def sessions(r: Reading | None) -> int | None:
    return r.report.activeSessions if r is not None and r.report is not None else None


def control(target: Target, body: dict[str, object]) -> None:
    req = urllib.request.Request(
        f"http://{target.ip}:{target.port}/control", data=json.dumps(body).encode(), method="POST"
    )
    urllib.request.urlopen(req, timeout=2).close()


async def test_follows_every_worker_and_wakes_on_a_change(
    fakes: list[Target], feed: SessionFeed
) -> None:
    for t in fakes:
        feed.upsert("ns", "va", t.pod())
    got = await until(feed, lambda r: len(r) == 2, "both workers read")
    assert [sessions(got[t.name]) for t in fakes] == [2, 5]
    assert all(r.report and r.report.capacity == 8 for r in got.values())
    assert all(r.report and r.report.version for r in got.values())  # they long-poll
    control(fakes[0], {"activeSessions": 7})
    got = await until(feed, lambda r: sessions(r["w0"]) == 7, "the change")
    assert sessions(got["w1"]) == 5
    feed.remove("ns", "va", "w0")
    assert set(feed.readings("ns", "va")) == {"w1"}
    assert [p.name for p in feed.pods("ns", "va")] == ["w1"]


async def test_hung_and_dead_workers_are_errors_not_empty(
    fakes: list[Target], feed: SessionFeed
) -> None:
    failures: list[str] = []
    feed.on_failure = lambda ns, va, reason: failures.append(reason)
    for t in fakes:
        feed.upsert("ns", "va", t.pod())
    await until(feed, lambda r: len(r) == 2 and all(x.report for x in r.values()), "read")
    control(fakes[0], {"hang": True})  # its open long poll times out
    got = await until(feed, lambda r: r["w0"].error == "timeout", "hung worker times out")
    assert got["w0"].report is None
    fakes[1].proc.kill()  # its open long poll is dropped, the retry is refused
    got = await until(feed, lambda r: r["w1"].error == "refused", "dead worker refused")
    assert got["w1"].report is None
    assert {"timeout", "refused"} <= set(failures)
    control(fakes[0], {"hang": False})
    await until(feed, lambda r: sessions(r["w0"]) == 2, "hung worker answers again")


async def test_an_observer_sees_a_report_that_lasts_less_than_a_consumers_wake(
    fakes: list[Target], feed: SessionFeed
) -> None:
    """The observer is called on every change, in order: failover's worker view records a
    call even when its worker dies before the failover loop next wakes (then the loop
    finds only the refusal, and the call would be in nobody's view)."""
    seen: list[int | str | None] = []

    def observer() -> None:
        r = feed.readings("ns", "va").get("w0")
        if r is not None and (not seen or seen[-1] != (sessions(r) or r.error)):
            seen.append(sessions(r) or r.error)

    wake = feed.subscribe("ns", "va", observer)
    try:
        feed.upsert("ns", "va", fakes[0].pod())
        await until(feed, lambda r: sessions(r.get("w0")) == 2, "first read")
        # The worker reports a third call; the next thing it does is die.
        control(fakes[0], {"activeSessions": 3})
        await until(feed, lambda r: sessions(r["w0"]) == 3, "the new call read")
        fakes[0].proc.kill()
        await until(feed, lambda r: r["w0"].error == "refused", "the death read")
        # A long poll in flight when the process died ends as "unreachable" (the connection
        # reset) before the next read is refused; one between two polls is only refused.
        assert seen in ([2, 3, "refused"], [2, 3, "unreachable", "refused"]), seen
        feed.unsubscribe("ns", "va", wake)
        # Unsubscribed: the observer is not called any more.
        before = list(seen)
        feed.upsert("ns", "va", fakes[1].pod())
        await until(feed, lambda r: "w1" in r, "the other worker read")
        assert seen == before
    finally:
        feed.unsubscribe("ns", "va", wake)


async def test_a_failing_observer_does_not_stop_the_feed(
    fakes: list[Target], feed: SessionFeed, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("a consumer's bug")

    wake = feed.subscribe("ns", "va", broken)
    try:
        for t in fakes:
            feed.upsert("ns", "va", t.pod())
        await until(feed, lambda r: len(r) == 2 and all(x.report for x in r.values()), "read")
        control(fakes[0], {"activeSessions": 6})
        await until(feed, lambda r: sessions(r["w0"]) == 6, "a change read after the failure")
        assert "observer failed" in caplog.text
    finally:
        feed.unsubscribe("ns", "va", wake)


async def test_a_worker_without_the_long_poll_is_read_every_retry_period() -> None:
    """An older worker ignores ?since=&wait= and has no version: read it periodically."""
    state = {"active": 1}

    async def get(_: web.Request) -> web.Response:
        return web.json_response({"activeSessions": state["active"], "capacity": 4})

    app = web.Application()
    app.router.add_get("/sessions", get)
    runner = web.AppRunner(app)
    await runner.setup()
    ip = "127.0.9.20"
    port = free_port(ip)
    await web.TCPSite(runner, ip, port).start()
    feed = SessionFeed(wait_seconds=30.0, timeout=0.3, retry_seconds=0.1, port=port)
    try:
        feed.upsert("ns", "va", WorkerPod("old", ip, True, False))
        await until(feed, lambda r: sessions(r.get("old")) == 1, "first read")
        state["active"] = 3
        got = await until(feed, lambda r: sessions(r.get("old")) == 3, "polled again")
        assert got["old"].report is not None and got["old"].report.version == ""
    finally:
        await feed.close()
        await runner.cleanup()


def test_sessions_report_rejects_malformed() -> None:
    with pytest.raises(ValueError, match="activeSessions"):
        parse_sessions({"activeSessions": -1, "capacity": 1})
    with pytest.raises(ValueError, match="capacity"):
        parse_sessions({"activeSessions": 1, "capacity": True})
    r = parse_sessions({"activeSessions": 1, "capacity": 2, "rooms": [{"room": "a", "jobId": "j"}]})
    assert r.rooms[0].room == "a"


async def test_a_worker_turning_ready_is_read_afresh(
    fakes: list[Target], feed: SessionFeed
) -> None:
    """A failed read from before a worker listened must not stand once it is ready (the
    autoscaler would count it as full and ask for one more worker, each new one alike)."""
    t = fakes[0]
    starting = WorkerPod(t.name, t.ip, False, False)
    feed.upsert("ns", "va", starting)
    await until(feed, lambda r: sessions(r.get("w0")) == 2, "first read")
    feed._fleets[("ns", "va")].pods["w0"].reading = Reading(None, "refused")  # as if before
    feed.upsert("ns", "va", t.pod())  # now ready
    assert "w0" not in feed.readings("ns", "va")  # not read yet, rather than refused
    await until(feed, lambda r: sessions(r.get("w0")) == 2, "read again once ready")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (errno.ECONNREFUSED, "refused"),  # the pod answers, nothing listens: the process died
        (errno.EHOSTUNREACH, "unreachable"),  # the network between operator and node
        (errno.ENETUNREACH, "unreachable"),
        (errno.ETIMEDOUT, "unreachable"),
    ],
)
def test_only_a_refused_connection_says_the_process_is_gone(error: int, reason: str) -> None:
    key = ConnectionKey("127.0.0.9", 9464, False, True, None, None, None, None)
    e = aiohttp.ClientConnectorError(key, OSError(error, os.strerror(error)))
    assert error_reason(e) == reason
    assert error_reason(TimeoutError()) == "timeout"


class FakeTokens:
    """A VoiceAgent's token as the operator would read it from the worker-keys Secret."""

    def __init__(self) -> None:
        self.value: str | None = None
        self.forgotten = 0

    async def get(self, namespace: str, va: str) -> str | None:
        return self.value

    def forget(self, namespace: str, va: str) -> None:
        self.forgotten += 1


async def _real_endpoint(ip: str, token: str | None, limit: LongPollLimit) -> Any:
    m = WorkerMetrics()
    reg = SessionRegistry(4, m)
    reg.start("job-a", "+15551234567", "agent-a")
    requests: list[float] = []

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        requests.append(asyncio.get_running_loop().time())
        return await handler(request)  # type: ignore[no-any-return]

    app = make_app(m, reg, token=token, limit=limit)
    app.middlewares.append(count)
    server = MetricsServer(app, ip, free_port(ip))
    await server.start()
    return server, requests


async def test_the_feed_sends_the_token_and_reads_it_again_after_a_401() -> None:
    ip = "127.0.9.30"
    server, _ = await _real_endpoint(ip, "s3cret-token", LongPollLimit())
    tokens = FakeTokens()  # the Secret is not there yet
    feed = SessionFeed(
        wait_seconds=2.0, timeout=0.3, retry_seconds=0.1, port=server.port, tokens=tokens
    )
    try:
        feed.upsert("ns", "va", WorkerPod("w", ip, True, False))
        got = await until(feed, lambda r: "w" in r, "a first reading")
        assert got["w"].error == "HTTP 401" and tokens.forgotten >= 1
        tokens.value = "s3cret-token"
        got = await until(feed, lambda r: sessions(r.get("w")) == 1, "read with the token")
        assert got["w"].report is not None
        assert got["w"].report.rooms[0].room == "+15551234567"
    finally:
        await feed.close()
        await server.aclose()


async def test_a_worker_at_its_long_poll_cap_is_read_once_a_retry_period_not_spun() -> None:
    ip = "127.0.9.31"
    server, requests = await _real_endpoint(ip, None, LongPollLimit(0))  # holds none
    feed = SessionFeed(wait_seconds=20.0, timeout=0.3, retry_seconds=0.2, port=server.port)
    try:
        feed.upsert("ns", "va", WorkerPod("w", ip, True, False))
        await until(feed, lambda r: sessions(r.get("w")) == 1, "first read")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(requests) < 6:
            assert loop.time() < deadline, f"only {len(requests)} reads"
            await asyncio.sleep(0.05)
        gaps = [b - a for a, b in itertools.pairwise(requests[1:])]  # after the first read
        assert min(gaps) >= 0.15, gaps  # the retry period between reads, not a busy loop
    finally:
        await feed.close()
        await server.aclose()


async def test_forget_drops_every_pod_and_stops_reading_them(
    fakes: list[Target], feed: SessionFeed
) -> None:
    """After a pause for a peer the feed starts from the watch's fresh listing: a pod
    deleted meanwhile is not kept (it would count as a full worker forever)."""
    for t in fakes:
        feed.upsert("ns", "va", t.pod())
    await until(feed, lambda r: len(r) == 2, "both workers read")
    feed.forget("ns", "va")
    assert feed.pods("ns", "va") == [] and feed.readings("ns", "va") == {}
    feed.upsert("ns", "va", fakes[1].pod())  # the listing on resume: only w1 still exists
    got = await until(feed, lambda r: set(r) == {"w1"}, "w1 read again")
    assert sessions(got["w1"]) == 5
    assert [p.name for p in feed.pods("ns", "va")] == ["w1"]


@pytest.mark.parametrize(
    ("reasons", "paused"),
    [
        (None, False),
        (kopf.DaemonStoppingReason.OPERATOR_PAUSING, True),
        (kopf.DaemonStoppingReason.OPERATOR_PAUSING | kopf.DaemonStoppingReason.DONE, True),
        (kopf.DaemonStoppingReason.RESOURCE_DELETED, False),
        (kopf.DaemonStoppingReason.OPERATOR_EXITING, False),
    ],
)
def test_only_a_pause_for_a_peer_makes_the_feed_stale(
    reasons: kopf.DaemonStoppingReason | None, paused: bool
) -> None:
    assert paused_for_a_peer(reasons) is paused
