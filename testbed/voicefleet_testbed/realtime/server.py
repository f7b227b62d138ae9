"""The stand-in's aiohttp server: the Realtime WebSocket plus a control/inspection API.

Routes (all on one loopback port):

| route | what |
| --- | --- |
| `GET /v1/realtime?model=M[&scenario=S]` (WebSocket) | the Realtime API, scenario `S` or `default` |
| `GET /s/<S>/v1/realtime?model=M`, `/s/<S>/v1?model=M` (WebSocket) | the same, scenario in the path |
| `POST /control` / `/s/<S>/control` | change settings or trigger faults (JSON body, see `settings.py`) |
| `GET /stats` / `/s/<S>/stats` | counters of the scenario (see `Stats.to_dict`) |
| `POST /reset` / `/s/<S>/reset` | settings back to the defaults, counters to zero |
| `GET /scenarios` | stats of every scenario |
| `GET /healthz` | 200 ok |

`?scenario=S` works on every route. A base URL of `http://HOST:PORT/s/<S>/v1` makes the
livekit OpenAI plugin connect to `ws://HOST:PORT/s/<S>/v1?model=...` (it only appends
`/realtime` to bare `/v1`-like paths), which is why both WebSocket paths exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

from aiohttp import web

from .scenario import Scenario
from .session import Connection
from .settings import Settings, apply_control

log = logging.getLogger("voicefleet.realtime")
DEFAULT_SCENARIO = "default"


class RealtimeStandIn:
    """The server. `async with RealtimeStandIn() as s:` starts it on a free loopback port."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, defaults: Settings | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.defaults = defaults or Settings()
        self.scenarios: dict[str, Scenario] = {}
        self._runner: web.AppRunner | None = None
        self._timers: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/scenarios", self._all_stats)
        for prefix in ("", "/s/{scenario}"):
            r.add_post(f"{prefix}/control", self._control)
            r.add_get(f"{prefix}/stats", self._stats)
            r.add_post(f"{prefix}/reset", self._reset)
        for path in ("/v1/realtime", "/realtime", "/s/{scenario}/v1/realtime", "/s/{scenario}/v1"):
            r.add_get(path, self._websocket)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        for t in list(self._timers):
            t.cancel()
        for sc in self.scenarios.values():
            for conn in list(sc.connections):
                with contextlib.suppress(Exception):
                    await conn.drop("close")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RealtimeStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- facts -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The control URL, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"

    def base_url(self, scenario: str | None = None) -> str:
        """What to give the OpenAI plugin as `base_url` (or OPENAI_BASE_URL)."""
        return f"{self.url}/s/{scenario}/v1" if scenario else f"{self.url}/v1"

    def scenario(self, name: str | None = None) -> Scenario:
        name = name or DEFAULT_SCENARIO
        if name not in self.scenarios:
            self.scenarios[name] = Scenario(name, self.defaults)
        return self.scenarios[name]

    def _scenario_of(self, request: web.Request) -> Scenario:
        return self.scenario(request.match_info.get("scenario") or request.query.get("scenario"))

    # --- handlers --------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        sc = self._scenario_of(request)
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response(
                {"error": {"type": "invalid_request_error", "code": "missing_api_key"}},
                status=401,
            )
        if sc.settings.refuseConnections > 0:
            sc.settings = replace(sc.settings, refuseConnections=sc.settings.refuseConnections - 1)
            sc.stats.refused += 1
            return web.Response(status=503, text="refused by the Realtime stand-in")
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, autoping=True)
        await ws.prepare(request)
        model = request.query.get("model", "gpt-realtime")
        await Connection(ws, request, sc, model).run()
        return ws

    async def _control(self, request: web.Request) -> web.Response:
        sc = self._scenario_of(request)
        try:
            body: Any = await request.json() if request.can_read_body else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            sc.settings, actions = apply_control(sc.settings, body)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        conns = list(sc.connections)
        if actions.error is not None:
            for c in conns:
                await c.send_error(actions.error.type, actions.error.code, actions.error.message)
        if actions.drop:
            for c in conns:
                await c.drop(actions.drop_mode)
        if actions.drop_after_ms is not None:
            self._later(actions.drop_after_ms / 1000, sc, actions.drop_mode)
        return web.json_response(
            {"scenario": sc.name, "settings": sc.settings.to_dict(), "connections": len(conns)}
        )

    def _later(self, delay: float, sc: Scenario, mode: str) -> None:
        async def drop_later() -> None:
            await asyncio.sleep(delay)  # the fault's own timing, not a synchronisation
            for c in list(sc.connections):
                await c.drop(mode)

        task = asyncio.create_task(drop_later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _stats(self, request: web.Request) -> web.Response:
        sc = self._scenario_of(request)
        return web.json_response(
            {"scenario": sc.name, "settings": sc.settings.to_dict(), **sc.stats.to_dict()}
        )

    async def _reset(self, request: web.Request) -> web.Response:
        sc = self._scenario_of(request)
        sc.reset()
        return web.json_response({"scenario": sc.name, "reset": True})

    async def _all_stats(self, request: web.Request) -> web.Response:
        return web.json_response({n: sc.stats.to_dict() for n, sc in self.scenarios.items()})
