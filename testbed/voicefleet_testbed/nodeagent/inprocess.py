"""Containers the node agent serves from its own event loop instead of spawning a process.

An image-table entry with `inprocess: fake-worker` makes each such container a
`InProcessFakeWorker`: the fake worker's endpoints (`GET /` on the health port; `/metrics`,
`/sessions`, `POST /control` on the metrics port) served on the pod's own IP by the node
agent, so thousands of worker pods cost a few kB each instead of a ~20 MB process. Probes,
Prometheus and the operator still reach them over HTTP at the pod IP; SIGTERM drains as the
process-backed fake worker does (exit once sessions reach zero or the drain timeout
passes), SIGKILL stops serving at once. `/sessions` long-polls as the contract says; a held
request waits on the worker's `ChangeNotifier` (no polling, so thousands of held requests
cost nothing while idle) and ends with its connection closed when the worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from aiohttp import web

from voicefleet_contract import HEALTH_PORT, METRICS_PORT, READY_PATH, Env
from voicefleet_contract.sessions import SESSIONS_PATH, parse_long_poll, serve_long_poll

from ..fake_worker import FakeWorker, capacity_from_config


class InProcessFakeWorker:
    """Looks like an `asyncio.subprocess.Process` to the container runner."""

    pid = 0  # no process: nothing to signal, nothing left behind

    def __init__(self, env: Mapping[str, str]) -> None:
        self.host = env.get(Env.POD_IP, "127.0.0.1")
        self.ports = (
            (int(env.get(Env.HEALTH_PORT, HEALTH_PORT)), "health"),
            (int(env.get(Env.METRICS_PORT, METRICS_PORT)), "metrics"),
        )
        capacity, drain_timeout = capacity_from_config(env)
        self.worker = FakeWorker(capacity, drain_timeout)
        self.worker.active = int(env.get("FAKE_ACTIVE_SESSIONS", "0"))
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        self._changed = asyncio.Event()
        self._runners: list[web.AppRunner] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._reads: set[asyncio.Task[Any]] = set()  # /sessions requests not yet answered

    async def start(self) -> None:
        try:
            for port, kind in self.ports:
                app = web.Application()
                if kind == "health":
                    app.router.add_get("/{tail:.*}", self._health)
                else:
                    app.router.add_get("/{tail:.*}", self._get)
                    app.router.add_post("/control", self._control)
                    app.on_shutdown.append(self._end_reads)  # any that came in since _exit
                # handler_cancellation: a long poll whose client gave up ends at once;
                # otherwise it holds its socket until its wait is over, and a node agent
                # serving 2,000 workers ran out of file descriptors (bench/autoscale.py).
                runner = web.AppRunner(
                    app,
                    access_log=None,
                    handle_signals=False,
                    shutdown_timeout=1,
                    handler_cancellation=True,
                )
                await runner.setup()
                self._runners.append(runner)
                site = web.TCPSite(runner, self.host, port, reuse_address=True)
                await site.start()
        except BaseException:
            await self._close()
            raise

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None or self._exited.is_set():
            return
        if sig == signal.SIGTERM:
            self._spawn(self._drain())
        elif sig == signal.SIGKILL:
            self._spawn(self._exit(-signal.SIGKILL))

    def probe(self, port: int, path: str) -> tuple[bool, str]:
        """What an httpGet probe of `port` and `path` would get, without the connection."""
        kinds = dict(self.ports)
        if self.returncode is not None or self._exited.is_set() or port not in kinds:
            return False, "connection refused"
        if kinds[port] == "health" or path.startswith(READY_PATH):
            return True, ""
        if self.worker.hang:
            return False, "timeout"
        return (True, "") if path.startswith(("/metrics", "/sessions")) else (False, "HTTP 404")

    # --- HTTP --------------------------------------------------------------------------
    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="OK")  # a full or draining worker stays Ready

    async def _get(self, request: web.Request) -> web.Response:
        if request.path.startswith(READY_PATH):
            return web.Response(text="registered")  # the fake is always "registered"
        if request.path.startswith(SESSIONS_PATH):
            return await self._sessions(request)
        await self._unhung()
        if request.path.startswith("/metrics"):
            return web.Response(
                text=self.worker.metrics(), content_type="text/plain", charset="utf-8"
            )
        return web.Response(status=404, text="not found")

    async def _unhung(self) -> None:
        while self.worker.hang:  # for tests: the operator's reads stop answering
            self._changed.clear()
            await self._changed.wait()

    async def _sessions(self, request: web.Request) -> web.Response:
        """Held until the report differs from `?since=` (or `wait` passes); `_exit` cancels
        the request, so its client sees the connection close, as from a dead process."""
        task = asyncio.current_task()
        assert task is not None
        self._reads.add(task)
        try:
            await self._unhung()
            try:
                poll = parse_long_poll(request.query)
            except ValueError as e:
                return web.Response(status=400, text=f"{e}\n")
            body = await serve_long_poll(self.worker.sessions, self.worker.notifier, poll)
            if self.worker.hang:  # hung while this request waited: no answer until it ends
                await self._unhung()
                body = self.worker.sessions()
            return web.json_response(body)
        finally:
            self._reads.discard(task)

    async def _control(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.worker.control(json.loads(body or b"{}"))  # wakes the held /sessions requests
        self._changed.set()
        return web.json_response(self.worker.sessions())

    # --- lifecycle ---------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        w = self.worker
        w.set_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + w.drain_timeout
        while w.active > 0 and loop.time() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
        await self._exit(0)

    async def _exit(self, code: int) -> None:
        if self._exited.is_set():
            return
        self._cancel_reads()  # held or hung /sessions reads end: their connections close
        self.worker.hang = False  # release hung requests, then stop serving
        self._changed.set()
        await self._close()
        if self.returncode is None:
            self.returncode = code
        self._exited.set()

    def _cancel_reads(self) -> None:
        for task in list(self._reads):
            task.cancel()

    async def _end_reads(self, _: web.Application) -> None:
        self._cancel_reads()

    async def _close(self) -> None:
        runners, self._runners = self._runners, []
        for r in runners:
            with contextlib.suppress(Exception):
                await r.cleanup()


INPROCESS: dict[str, Callable[[Mapping[str, str]], InProcessFakeWorker]] = {
    "fake-worker": InProcessFakeWorker,
}
