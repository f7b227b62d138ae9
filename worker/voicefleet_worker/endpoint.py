"""The metrics endpoint on VOICEFLEET_BIND_ADDRESS:VOICEFLEET_METRICS_PORT: `/metrics` (Prometheus text),
`/sessions` (the contract's `SessionsReport` with its version; `?since=&wait=` long-polls
it: the answer comes when the report changes or `wait` seconds pass) and `/ready` (the
readiness probe: 200 once registered with LiveKit, else 503).

`/sessions` lists room names, which can be phone numbers: with a token (the operator's
`VOICEFLEET_SESSIONS_TOKEN`) it answers only `Authorization: Bearer <token>`, else 401.
At most `MAX_HELD_LONG_POLLS` long polls are held; one more is answered at once.
`/metrics` (counts and latencies, no room names or words) and `/ready` (the kubelet's
probe) stay open; the chart's NetworkPolicy limits who reaches the port at all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voicefleet_contract import READY_PATH
from voicefleet_contract.sessions import (
    AUTH_HEADER,
    SESSIONS_PATH,
    LongPollLimit,
    authorized,
    parse_long_poll,
    serve_long_poll,
)

from .metrics import WorkerMetrics
from .sessions import SessionRegistry


def make_app(
    metrics: WorkerMetrics,
    sessions: SessionRegistry,
    registered: Callable[[], bool] = lambda: True,
    token: str | None = None,
    limit: LongPollLimit | None = None,
) -> web.Application:
    limit = limit or LongPollLimit()

    async def get_metrics(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    polls: set[asyncio.Task[Any]] = set()  # the /sessions requests being held

    async def get_sessions(request: web.Request) -> web.Response:
        if not authorized(request.headers.get(AUTH_HEADER), token):
            return web.Response(
                status=401,
                text="a bearer token is required\n",
                headers={"WWW-Authenticate": 'Bearer realm="voicefleet-sessions"'},
            )
        try:
            poll = parse_long_poll(request.query)
        except ValueError as e:
            return web.Response(status=400, text=f"{e}\n")
        task = asyncio.current_task()
        assert task is not None
        polls.add(task)
        try:
            body = await serve_long_poll(
                lambda: sessions.report().to_dict(), sessions.changes, poll, limit
            )
        finally:
            polls.discard(task)
        return web.json_response(body)

    async def end_long_polls(_: web.Application) -> None:
        """Shutting down: held requests end now (their connections close) instead of
        holding the worker's exit for up to their `wait`."""
        for task in list(polls):
            task.cancel()

    async def get_ready(_: web.Request) -> web.Response:
        if registered():
            return web.Response(text="registered with LiveKit\n")
        return web.Response(status=503, text="not registered with LiveKit\n")

    app = web.Application()
    app.router.add_get(READY_PATH, get_ready)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get(SESSIONS_PATH, get_sessions)
    app.on_shutdown.append(end_long_polls)
    return app


class MetricsServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        # A long poll whose client gave up ends at once instead of holding its socket.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self.host, self.port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0 and self._runner.addresses:
            self.port = self._runner.addresses[0][1]  # the port the OS picked

    async def aclose(self) -> None:
        await self._runner.cleanup()
