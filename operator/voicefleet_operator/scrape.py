"""Read every ready worker's `/sessions` report, in parallel, each with a deadline.

The autoscaler and failover call this once a second for all pods of all VoiceAgents, so
it is one shared aiohttp session with a bound on concurrent requests. A pod that does not
answer in time (or answers garbage) yields `None`, never zero sessions: the caller treats
it as full (autoscaler) or as possibly dead (failover).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from voicefleet_contract import METRICS_PORT
from voicefleet_contract.sessions import SESSIONS_PATH, SessionsReport, parse_sessions


@dataclass(frozen=True)
class Target:
    key: str  # e.g. "namespace/pod"
    ip: str
    port: int = METRICS_PORT


@dataclass(frozen=True)
class Scraped:
    target: Target
    report: SessionsReport | None
    error: str = ""  # why report is None: "timeout", "refused", "bad response ..."


class Scraper:
    def __init__(self, timeout: float = 0.5, concurrency: int = 256) -> None:
        self.timeout = timeout
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def one(self, target: Target) -> Scraped:
        http = await self._http()
        url = f"http://{target.ip}:{target.port}{SESSIONS_PATH}"
        async with self._limit:
            try:
                async with http.get(url) as resp:
                    if resp.status != 200:
                        return Scraped(target, None, f"HTTP {resp.status}")
                    body = await resp.read()
                return Scraped(target, parse_sessions(json.loads(body)))
            except TimeoutError:
                return Scraped(target, None, "timeout")
            except aiohttp.ClientConnectorError:
                return Scraped(target, None, "refused")
            except (aiohttp.ClientError, OSError) as e:
                return Scraped(target, None, f"error: {type(e).__name__}")
            except ValueError as e:  # includes JSONDecodeError
                return Scraped(target, None, f"bad response: {e}")

    async def all(self, targets: Sequence[Target]) -> list[Scraped]:
        return list(await asyncio.gather(*(self.one(t) for t in targets)))
