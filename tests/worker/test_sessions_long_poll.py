"""The worker's `/sessions` long poll over real HTTP: `?since=<version>&wait=<seconds>` is
held until the registry changes (from a job thread, as in the worker) or `wait` passes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from voicefleet_contract.sessions import ChangeNotifier, parse_sessions, query_string
from voicefleet_worker.endpoint import MetricsServer, make_app
from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.sessions import SessionRegistry


class WatchedNotifier(ChangeNotifier):
    """Tells the test when a request is being held: `waiting` is set as a waiter registers
    (the handler's task goes on to register before it next yields)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        self.waiting.set()
        await super().wait(timeout)


@dataclass
class Worker:
    registry: SessionRegistry
    notifier: WatchedNotifier
    server: MetricsServer
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/sessions"

    async def get(self, query: str = "") -> dict[str, Any]:
        async with self.http.get(self.url + query) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def held(self, query: str) -> asyncio.Future[dict[str, Any]]:
        """Send a long poll; return once the worker holds it."""
        self.notifier.waiting.clear()
        pending = asyncio.ensure_future(self.get(query))
        waiting = asyncio.ensure_future(self.notifier.waiting.wait())
        await asyncio.wait({pending, waiting}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert not pending.done(), "answered at once: the request was not held"
        assert self.notifier.waiting.is_set(), "the request never reached the worker"
        return pending


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    m = WorkerMetrics()
    reg = SessionRegistry(4, m)
    notifier = reg.changes = WatchedNotifier()
    reg.start("job-a", "room-a", "agent-a")
    server = MetricsServer(make_app(m, reg), "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Worker(reg, notifier, server, http)
    finally:
        await server.aclose()


def in_a_job_thread(fn: Any, *args: Any) -> None:
    t = threading.Thread(target=fn, args=args)
    t.start()
    t.join()


def joined_later(reg: SessionRegistry, job_id: str, reported: float) -> None:
    """`joined` at a start time later than the one reported (once the clock has moved)."""
    while time.time() <= reported:
        time.sleep(0.001)
    reg.joined(job_id)


async def test_a_plain_read_has_the_version(worker: Worker) -> None:
    body = await worker.get()
    report = parse_sessions(body)
    assert report.activeSessions == 1 and report.version
    assert report.version == worker.registry.report().to_dict()["version"]
    assert (await worker.get(query_string("some-older-version", 5))) == body  # differs: at once


async def test_a_long_poll_is_answered_when_a_session_starts(worker: Worker) -> None:
    first = await worker.get()
    pending = await worker.held(query_string(first["version"], 5))
    started = time.monotonic()
    in_a_job_thread(worker.registry.start, "job-b", "room-b", "agent-b")
    body = await asyncio.wait_for(pending, 10)
    assert body["activeSessions"] == 2 and body["version"] != first["version"]
    assert {r["room"] for r in body["rooms"]} == {"room-a", "room-b"}
    assert time.monotonic() - started < 4  # woken by the change, not the 5 s deadline


@pytest.mark.parametrize("change", ["end", "joined", "drain"])
async def test_every_change_to_the_report_wakes_it(worker: Worker, change: str) -> None:
    first = await worker.get()
    pending = await worker.held(query_string(first["version"], 5))
    reg = worker.registry
    if change == "end":
        in_a_job_thread(reg.end, "job-a", "completed")
    elif change == "joined":
        in_a_job_thread(joined_later, reg, "job-a", first["rooms"][0]["startedAt"])
    else:
        in_a_job_thread(reg.set_draining)
    body = await asyncio.wait_for(pending, 4)
    assert body["version"] != first["version"]
    if change == "end":
        assert body["activeSessions"] == 0 and body["rooms"] == []
    elif change == "joined":
        assert body["rooms"][0]["startedAt"] > first["rooms"][0]["startedAt"]
    else:
        assert body["draining"] is True


async def test_an_unchanged_report_comes_back_at_the_deadline(worker: Worker) -> None:
    first = await worker.get()
    started = time.monotonic()
    assert await worker.get(query_string(first["version"], 0.2)) == first
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("wait", ["abc", "1000", "-1"])
async def test_a_bad_wait_is_a_400_naming_it(worker: Worker, wait: str) -> None:
    async with worker.http.get(f"{worker.url}?since=x&wait={wait}") as r:
        assert r.status == 400
        assert (await r.text()).startswith("wait ")


async def test_shutting_down_closes_a_held_request_at_once(worker: Worker) -> None:
    first = await worker.get()
    pending = await worker.held(query_string(first["version"], 30))
    started = time.monotonic()
    await worker.server.aclose()  # without ending it, this would wait for the 30 s
    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(pending, 5)
