"""The worker's `/sessions` over real HTTP: the bearer token (room names can be phone
numbers) and the cap on held long polls; `/metrics` and `/ready` stay open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from voicefleet_contract.sessions import AUTH_HEADER, LongPollLimit, bearer, query_string
from voicefleet_worker.endpoint import MetricsServer, make_app
from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.sessions import SessionRegistry

from .util import SESSIONS_TOKEN

PHONE = "+15551234567"


class Endpoint:
    def __init__(self, server: MetricsServer, http: aiohttp.ClientSession) -> None:
        self.server, self.http = server, http

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    async def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        headers = {AUTH_HEADER: bearer(token)} if token is not None else {}
        async with self.http.get(self.url(path), headers=headers) as r:
            return r.status, await r.text()


async def _endpoint(token: str | None, limit: LongPollLimit | None = None) -> Any:
    m = WorkerMetrics()
    reg = SessionRegistry(4, m)
    reg.start("job-a", PHONE, "agent-a")
    server = MetricsServer(make_app(m, reg, token=token, limit=limit), "127.0.0.1", 0)
    await server.start()
    return server, reg


@pytest.fixture
async def guarded() -> AsyncIterator[Endpoint]:
    server, _ = await _endpoint(SESSIONS_TOKEN)
    try:
        async with aiohttp.ClientSession() as http:
            yield Endpoint(server, http)
    finally:
        await server.aclose()


async def test_sessions_needs_the_token_and_metrics_and_ready_do_not(guarded: Endpoint) -> None:
    for token in (None, "", "wrong-token", SESSIONS_TOKEN + "x"):
        status, text = await guarded.get("/sessions", token)
        assert status == 401 and PHONE not in text
    # a long poll is no way around it
    status, text = await guarded.get("/sessions" + query_string("v", 1), "wrong-token")
    assert status == 401 and PHONE not in text
    status, text = await guarded.get("/sessions", SESSIONS_TOKEN)
    assert status == 200 and PHONE in text
    status, text = await guarded.get("/metrics")
    assert status == 200 and "voicefleet_worker_active_sessions" in text
    assert PHONE not in text  # metrics carry no room names
    assert (await guarded.get("/ready"))[0] == 200


async def test_without_a_token_sessions_is_open() -> None:
    server, _ = await _endpoint(None)
    try:
        async with aiohttp.ClientSession() as http:
            status, text = await Endpoint(server, http).get("/sessions")
        assert status == 200 and PHONE in text
    finally:
        await server.aclose()


async def test_long_polls_beyond_the_cap_are_answered_at_once() -> None:
    limit = LongPollLimit(2)
    server, reg = await _endpoint(None, limit)
    try:
        async with aiohttp.ClientSession() as http:
            ep = Endpoint(server, http)
            status, text = await ep.get("/sessions")
            version = text.split('"version": "')[1].split('"')[0]
            poll = "/sessions" + query_string(version, 30)
            held = [asyncio.ensure_future(ep.get(poll)) for _ in range(2)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while limit.held < 2:  # both reached the worker and are held
                assert loop.time() < deadline, "the long polls were never held"
                await asyncio.sleep(0.01)
            # a third: not held, answered at once with the unchanged report
            started = loop.time()
            status, text = await asyncio.wait_for(ep.get(poll), 5)
            assert status == 200 and version in text and loop.time() - started < 5
            assert limit.refused == 1 and not any(h.done() for h in held)
            # the held ones answer on a change, and the slots are free again
            reg.start("job-b", "room-b", "agent-b")
            for h in held:
                assert (await asyncio.wait_for(h, 5))[0] == 200
            assert limit.held == 0
    finally:
        await server.aclose()
