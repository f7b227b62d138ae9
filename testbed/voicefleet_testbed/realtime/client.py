"""An async client for the stand-in's control API, for tests and benchmarks.

standin = StandInClient("http://127.0.0.1:PORT", scenario="my-test")
model = openai.realtime.RealtimeModel(base_url=standin.base_url, api_key="test")
await standin.configure(modelDelayMs=300, nextToolCall={"name": "lookup", "arguments": {}})
stats = await standin.wait_stats(lambda s: s["responses"]["completed"] >= 1, timeout=10)
await standin.configure(dropNow=True)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp


class StandInClient:
    def __init__(self, url: str, scenario: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.scenario = scenario

    @property
    def _prefix(self) -> str:
        return f"{self.url}/s/{self.scenario}" if self.scenario else self.url

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (OPENAI_BASE_URL) that lands in this client's scenario."""
        return f"{self._prefix}/v1"

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self._prefix}{path}", json=body) as r,
        ):
            data = await r.json()
            if r.status >= 400:
                raise RuntimeError(f"stand-in {path}: HTTP {r.status}: {data}")
            return data

    async def configure(self, **settings: Any) -> dict[str, Any]:
        """POST /control: settings (modelDelayMs=...) and faults (dropNow=True, ...)."""
        result: dict[str, Any] = await self._call("POST", "/control", settings)
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def wait_stats(
        self, check: Callable[[dict[str, Any]], bool], timeout: float, interval: float = 0.05
    ) -> dict[str, Any]:
        """Poll /stats until `check` holds; TimeoutError (with the last stats) otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            stats = await self.stats()
            if check(stats):
                return stats
            if loop.time() > deadline:
                raise TimeoutError(f"stand-in stats never matched within {timeout}s: {stats}")
            await asyncio.sleep(interval)
