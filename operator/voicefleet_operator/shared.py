"""One read shared by every caller that wants the same thing within a period.

Each VoiceAgent's failover daemon needs its LiveKit credentials Secret and, every sweep
period, the rooms of its LiveKit deployment. Many VoiceAgents share a Secret and a
deployment: `TtlShared` lets them share the read too, one per key per period, however many
VoiceAgents ask.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    task: asyncio.Task[V]
    at: float  # when the read started: what it returns is as of then


def _retrieve(task: asyncio.Task[V]) -> None:
    """Marks a failure as seen, also when every waiter was cancelled (no asyncio warning)."""
    if not task.cancelled():
        task.exception()


class TtlShared(Generic[K, V]):
    """The result of `fetch()` per key, read again only once it is `ttl` seconds old.

    Callers that ask while a read for their key is in flight await that read (no second
    read, however many ask at once); a cancelled caller does not cancel it. A failed read is
    shared too, as the same exception, for `retry_seconds` (at most `ttl`): a dead backend is
    asked once per key that often rather than once per caller. The values are never
    printed (no repr of them here); `clock` is injected for tests."""

    def __init__(self, clock: Callable[[], float], retry_seconds: float) -> None:
        self.clock = clock
        self.retry_seconds = retry_seconds
        self._entries: dict[K, _Entry[V]] = {}
        self._pruned_at = -math.inf

    def __repr__(self) -> str:
        return f"TtlShared({len(self._entries)} keys)"

    def _usable(self, e: _Entry[V], now: float, ttl: float) -> bool:
        if not e.task.done():
            return True  # in flight: share it
        if e.task.cancelled():
            return False
        limit = ttl if e.task.exception() is None else min(ttl, self.retry_seconds)
        return now - e.at < limit

    async def get(self, key: K, fetch: Callable[[], Coroutine[Any, Any, V]], ttl: float) -> V:
        """`fetch()`'s result for `key`, read at most `ttl` seconds ago (or being read)."""
        now = self.clock()
        e = self._entries.get(key)
        if e is None or not self._usable(e, now, ttl):
            self._prune(now, ttl)
            e = _Entry(asyncio.create_task(fetch()), now)
            e.task.add_done_callback(_retrieve)
            self._entries[key] = e
        if e.task.done():
            return e.task.result()
        return await asyncio.shield(e.task)

    def forget(self, key: K) -> None:
        """The next `get` of `key` reads again (a read in flight is still shared)."""
        e = self._entries.get(key)
        if e is not None and e.task.done():
            del self._entries[key]

    def clear(self) -> None:
        for e in self._entries.values():
            e.task.cancel()
        self._entries.clear()

    def _prune(self, now: float, ttl: float) -> None:
        """Drops stale entries (keys nobody asks for any more), at most once per `ttl`."""
        if now - self._pruned_at < ttl:
            return
        self._pruned_at = now
        for k, e in list(self._entries.items()):
            if not self._usable(e, now, ttl):
                del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)
