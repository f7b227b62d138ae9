"""The metrics endpoint on POD_IP:VOICEFLEET_METRICS_PORT: `/metrics` (Prometheus text),
`/sessions` (the contract's `SessionsReport`, read every second by the operator) and
`/ready` (the readiness probe: 200 once registered with LiveKit, else 503)."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voicefleet_contract import READY_PATH
from voicefleet_contract.sessions import SESSIONS_PATH

from .metrics import WorkerMetrics
from .sessions import SessionRegistry


def make_app(
    metrics: WorkerMetrics,
    sessions: SessionRegistry,
    registered: Callable[[], bool] = lambda: True,
) -> web.Application:
    async def get_metrics(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_sessions(_: web.Request) -> web.Response:
        body = json.dumps(sessions.report().to_dict())
        return web.Response(text=body, content_type="application/json")

    async def get_ready(_: web.Request) -> web.Response:
        if registered():
            return web.Response(text="registered with LiveKit\n")
        return web.Response(status=503, text="not registered with LiveKit\n")

    app = web.Application()
    app.router.add_get(READY_PATH, get_ready)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get(SESSIONS_PATH, get_sessions)
    return app


class MetricsServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self.host, self.port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        await self._runner.cleanup()
