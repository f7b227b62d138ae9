"""The fake workers' `/sessions` long poll over real HTTP, without a cluster: the process
one (`python -m voicefleet_testbed.fake_worker`, threads and a Condition) and the node
agent's in-process one (event-driven on its `ChangeNotifier`)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from voicefleet_contract import Env
from voicefleet_contract.sessions import ChangeNotifier, query_string, report_version
from voicefleet_testbed.nodeagent.inprocess import InProcessFakeWorker
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.procs import wait_for

HOST = "127.0.0.1"
PROMPT = 0.8  # seconds: "at once" for a closed connection (aiohttp's own shutdown takes 1 s)


async def get(http: aiohttp.ClientSession, url: str, query: str = "") -> dict[str, Any]:
    async with http.get(url + query) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with http.post(url, json=body) as r:
        assert r.status == 200


async def still_pending(fut: asyncio.Future[Any], seconds: float = 0.3) -> None:
    """The request was not answered (the server holds it, or never got it: then the change
    below answers it at once, and the test still checks what it says)."""
    await asyncio.wait({fut}, timeout=seconds)
    assert not fut.done(), f"answered at once: {fut.result() if not fut.exception() else fut}"


# --- the process fake worker -----------------------------------------------------------


@dataclass
class ProcessFake:
    proc: subprocess.Popen[bytes]
    base: str  # the metrics port's base URL


def port_open(port: int) -> bool:
    with socket.create_connection((HOST, port), 0.2):
        return True


@pytest.fixture
def process_fake() -> Iterator[ProcessFake]:
    """A fake worker process with 1 session of 4."""
    metrics = free_port(HOST)
    env = dict(os.environ, **{Env.POD_IP: HOST, Env.METRICS_PORT: str(metrics),
               Env.HEALTH_PORT: str(free_port(HOST)), "FAKE_ACTIVE_SESSIONS": "1",
               "FAKE_CAPACITY": "4", "FAKE_DRAIN_TIMEOUT": "60"})  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "voicefleet_testbed.fake_worker"], env=env)
    try:
        wait_for(lambda: port_open(metrics), 10, "the fake worker's metrics port")
        yield ProcessFake(proc, f"http://{HOST}:{metrics}")
    finally:
        proc.kill()
        proc.wait()


async def test_process_fake_plain_read_has_the_version(process_fake: ProcessFake) -> None:
    url = process_fake.base + "/sessions"
    async with aiohttp.ClientSession() as http:
        body = await get(http, url)
        assert body["activeSessions"] == 1 and body["version"]
        assert body["version"] == report_version(body)
        assert await get(http, url, query_string("older", 5)) == body  # differs: at once


async def test_process_fake_long_poll_is_answered_on_a_change(process_fake: ProcessFake) -> None:
    url = process_fake.base + "/sessions"
    async with aiohttp.ClientSession() as http:
        first = await get(http, url)
        pending = asyncio.ensure_future(get(http, url, query_string(first["version"], 5)))
        await still_pending(pending)
        started = time.monotonic()
        await post(http, process_fake.base + "/control", {"activeSessions": 3})
        body = await asyncio.wait_for(pending, 10)
        assert body["activeSessions"] == 3 and body["version"] != first["version"]
        assert time.monotonic() - started < 4  # woken by the change, not the 5 s deadline


async def test_process_fake_long_poll_is_answered_when_the_drain_starts(
    process_fake: ProcessFake,
) -> None:
    url = process_fake.base + "/sessions"
    async with aiohttp.ClientSession() as http:
        first = await get(http, url)
        pending = asyncio.ensure_future(get(http, url, query_string(first["version"], 5)))
        await still_pending(pending)
        process_fake.proc.send_signal(signal.SIGTERM)  # a session is left: it drains, serving
        body = await asyncio.wait_for(pending, 4)
        assert body["draining"] is True and body["activeSessions"] == 1


async def test_process_fake_same_report_at_the_deadline_and_bad_waits(
    process_fake: ProcessFake,
) -> None:
    url = process_fake.base + "/sessions"
    async with aiohttp.ClientSession() as http:
        first = await get(http, url)
        assert await get(http, url, query_string(first["version"], 0.2)) == first
        for wait in ("abc", "1000"):
            async with http.get(f"{url}?since=x&wait={wait}") as r:
                assert r.status == 400
                assert (await r.text()).startswith("wait ")


# --- the in-process fake worker --------------------------------------------------------


class WatchedNotifier(ChangeNotifier):
    """`waiting` is set as a waiter registers: the request is held from then on."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        self.waiting.set()
        await super().wait(timeout)


@dataclass
class InProcess:
    fake: InProcessFakeWorker
    notifier: WatchedNotifier
    http: aiohttp.ClientSession
    base: str

    @property
    def url(self) -> str:
        return self.base + "/sessions"

    async def held(self, query: str) -> asyncio.Future[dict[str, Any]]:
        """Send a long poll; return once the worker holds it."""
        self.notifier.waiting.clear()
        pending = asyncio.ensure_future(get(self.http, self.url, query))
        waiting = asyncio.ensure_future(self.notifier.waiting.wait())
        await asyncio.wait({pending, waiting}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert not pending.done(), "answered at once: the request was not held"
        assert self.notifier.waiting.is_set(), "the request never reached the worker"
        return pending


@pytest.fixture
async def inprocess() -> AsyncIterator[InProcess]:
    """An in-process fake worker with 1 session of 4, as the node agent runs it."""
    metrics = free_port(HOST)
    env = {Env.POD_IP: HOST, Env.METRICS_PORT: str(metrics),
           Env.HEALTH_PORT: str(free_port(HOST)), "FAKE_ACTIVE_SESSIONS": "1",
           "FAKE_CAPACITY": "4", "FAKE_DRAIN_TIMEOUT": "60"}  # fmt: skip
    fake = InProcessFakeWorker(env)
    notifier = fake.worker.notifier = WatchedNotifier()
    await fake.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield InProcess(fake, notifier, http, f"http://{HOST}:{metrics}")
    finally:
        fake.send_signal(signal.SIGKILL)
        await asyncio.wait_for(fake.wait(), 10)


async def test_inprocess_plain_read_has_the_version(inprocess: InProcess) -> None:
    body = await get(inprocess.http, inprocess.url)
    assert body["activeSessions"] == 1 and body["capacity"] == 4
    assert body["version"] == report_version(body)
    assert await get(inprocess.http, inprocess.url, query_string("older", 5)) == body


async def test_inprocess_long_poll_is_answered_on_a_change(inprocess: InProcess) -> None:
    first = await get(inprocess.http, inprocess.url)
    pending = await inprocess.held(query_string(first["version"], 5))
    started = time.monotonic()
    await post(inprocess.http, inprocess.base + "/control", {"activeSessions": 3})
    body = await asyncio.wait_for(pending, 10)
    assert body["activeSessions"] == 3 and body["version"] != first["version"]
    assert time.monotonic() - started < 4  # woken by the change, not the 5 s deadline


async def test_inprocess_long_poll_is_answered_when_the_drain_starts(
    inprocess: InProcess,
) -> None:
    first = await get(inprocess.http, inprocess.url)
    pending = await inprocess.held(query_string(first["version"], 5))
    inprocess.fake.send_signal(signal.SIGTERM)  # a session is left: it drains, serving
    body = await asyncio.wait_for(pending, 4)
    assert body["draining"] is True and body["activeSessions"] == 1


async def test_inprocess_same_report_at_the_deadline_and_bad_waits(inprocess: InProcess) -> None:
    first = await get(inprocess.http, inprocess.url)
    assert await get(inprocess.http, inprocess.url, query_string(first["version"], 0.2)) == first
    for wait in ("abc", "1000"):
        async with inprocess.http.get(f"{inprocess.url}?since=x&wait={wait}") as r:
            assert r.status == 400
            assert (await r.text()).startswith("wait ")


async def test_inprocess_sigkill_closes_a_held_long_poll(inprocess: InProcess) -> None:
    first = await get(inprocess.http, inprocess.url)
    pending = await inprocess.held(query_string(first["version"], 30))
    inprocess.fake.send_signal(signal.SIGKILL)
    # The connection closes, no answer, at once: not only when aiohttp's shutdown cancels
    # what is left after the runner's 1 s shutdown_timeout (a TimeoutError here).
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(pending, PROMPT)
    assert await asyncio.wait_for(inprocess.fake.wait(), 5) == -signal.SIGKILL


async def test_inprocess_hung_worker_answers_no_long_poll_and_sigkill_ends_it(
    inprocess: InProcess,
) -> None:
    first = await get(inprocess.http, inprocess.url)
    await post(inprocess.http, inprocess.base + "/control", {"hang": True})
    pending = asyncio.ensure_future(
        get(inprocess.http, inprocess.url, query_string(first["version"], 0.2))
    )
    await still_pending(pending, 1.0)  # its 0.2 s passed: a live worker would have answered
    inprocess.fake.send_signal(signal.SIGKILL)
    with pytest.raises(aiohttp.ClientError):  # not an answer: the connection closes
        await asyncio.wait_for(pending, PROMPT)
