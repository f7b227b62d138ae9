"""`voicefleet_worker_registered` and livekit reconnections from the server's events and
connection state (a stand-in object with the same surface as AgentServer)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from voicefleet_worker.lifecycle import watch_registration
from voicefleet_worker.metrics import WorkerMetrics


class FakeServer:
    def __init__(self) -> None:
        self.handlers: dict[str, Callable[..., Any]] = {}
        self._connecting = True
        self._connection_failed = False

    def on(self, event: str, fn: Callable[..., Any]) -> None:
        self.handlers[event] = fn

    def register(self) -> None:
        self._connecting = False
        self.handlers["worker_registered"]("AW_1", None)


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in iter(int, 1):  # poll with a deadline
        if check():
            return
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_registered_gauge_and_livekit_reconnections() -> None:
    m = WorkerMetrics()
    server = FakeServer()
    ready: list[bool] = []
    task = asyncio.create_task(watch_registration(server, m, ready.append))  # type: ignore[arg-type]
    value = m.registry.get_sample_value
    try:
        await _until(lambda: "worker_registered" in server.handlers)
        assert value("voicefleet_worker_registered") == 0
        server.register()
        await _until(lambda: value("voicefleet_worker_registered") == 1)
        assert ready[-1] is True and False in ready  # /ready follows registration
        assert value("voicefleet_worker_reconnections_total", {"link": "livekit"}) == 0
        server._connecting = True  # the connection dropped; livekit-agents retries
        await _until(lambda: value("voicefleet_worker_registered") == 0)
        server.register()
        await _until(lambda: value("voicefleet_worker_registered") == 1)
        assert value("voicefleet_worker_reconnections_total", {"link": "livekit"}) == 1
        server._connection_failed = True
        await _until(lambda: value("voicefleet_worker_registered") == 0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert value("voicefleet_worker_registered") == 0
