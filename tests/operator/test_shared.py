"""TtlShared: one read per key and period, shared by concurrent callers. A fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from voicefleet_operator.shared import TtlShared


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Source:
    """Counts reads per key; `gate` holds every read until set; `fail` makes reads raise."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    def fetch(self, key: str) -> Callable[[], Coroutine[Any, Any, str]]:
        async def read() -> str:
            self.reads[key] = self.reads.get(key, 0) + 1
            await self.gate.wait()
            if self.fail is not None:
                raise self.fail
            return f"{key}#{self.reads[key]}"

        return read


def setup(retry: float = 1.0) -> tuple[TtlShared[str, str], Source, Clock]:
    clock = Clock()
    return TtlShared(clock, retry), Source(), clock


async def test_one_read_per_key_and_period() -> None:
    shared, src, clock = setup()
    assert await shared.get("a", src.fetch("a"), 10) == "a#1"
    clock.t += 9.9
    assert await shared.get("a", src.fetch("a"), 10) == "a#1"
    assert await shared.get("b", src.fetch("b"), 10) == "b#1"  # another key: its own read
    assert src.reads == {"a": 1, "b": 1}
    clock.t += 0.1  # "a" is 10 s old now
    assert await shared.get("a", src.fetch("a"), 10) == "a#2"
    assert await shared.get("b", src.fetch("b"), 10) == "b#1"
    assert src.reads == {"a": 2, "b": 1}


async def test_ttl_zero_reads_every_time() -> None:
    shared, src, _ = setup()
    for _ in range(3):
        await shared.get("a", src.fetch("a"), 0)
    assert src.reads == {"a": 3}


async def test_concurrent_first_reads_share_the_one_in_flight() -> None:
    shared, src, _ = setup()
    src.gate.clear()
    waiters = [asyncio.create_task(shared.get("a", src.fetch("a"), 10)) for _ in range(50)]
    other = asyncio.create_task(shared.get("b", src.fetch("b"), 10))
    await asyncio.sleep(0.01)
    assert src.reads == {"a": 1, "b": 1}
    assert not any(w.done() for w in waiters)
    src.gate.set()
    assert set(await asyncio.gather(*waiters)) == {"a#1"}
    assert await other == "b#1"
    assert src.reads == {"a": 1, "b": 1}


async def test_an_in_flight_read_is_shared_also_with_ttl_zero() -> None:
    shared, src, _ = setup()
    src.gate.clear()
    waiters = [asyncio.create_task(shared.get("a", src.fetch("a"), 0)) for _ in range(5)]
    await asyncio.sleep(0.01)
    src.gate.set()
    await asyncio.gather(*waiters)
    assert src.reads == {"a": 1}


async def test_a_cancelled_caller_does_not_cancel_the_shared_read() -> None:
    shared, src, _ = setup()
    src.gate.clear()
    first = asyncio.create_task(shared.get("a", src.fetch("a"), 10))
    second = asyncio.create_task(shared.get("a", src.fetch("a"), 10))
    await asyncio.sleep(0.01)
    first.cancel()  # e.g. its VoiceAgent was deleted
    await asyncio.sleep(0.01)
    src.gate.set()
    assert await second == "a#1"
    assert first.cancelled()
    assert src.reads == {"a": 1}


async def test_a_failure_is_shared_for_the_retry_period_then_read_again() -> None:
    shared, src, clock = setup(retry=1.0)
    src.fail = ConnectionError("down")
    src.gate.clear()
    waiters = [asyncio.create_task(shared.get("a", src.fetch("a"), 10)) for _ in range(5)]
    await asyncio.sleep(0.01)
    src.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    with pytest.raises(ConnectionError):  # the same failure, not a new read
        await shared.get("a", src.fetch("a"), 10)
    assert src.reads == {"a": 1}
    clock.t += 1.0
    src.fail = None
    assert await shared.get("a", src.fetch("a"), 10) == "a#2"
    clock.t += 5  # a success lasts the whole period again
    assert await shared.get("a", src.fetch("a"), 10) == "a#2"


async def test_a_failure_is_not_kept_longer_than_the_period() -> None:
    shared, src, clock = setup(retry=5.0)
    src.fail = ConnectionError("down")
    with pytest.raises(ConnectionError):
        await shared.get("a", src.fetch("a"), 2)
    clock.t += 2
    src.fail = None
    assert await shared.get("a", src.fetch("a"), 2) == "a#2"


async def test_forget_reads_again() -> None:
    shared, src, _ = setup()
    await shared.get("a", src.fetch("a"), 10)
    shared.forget("a")
    shared.forget("never-read")
    assert await shared.get("a", src.fetch("a"), 10) == "a#2"


async def test_keys_nobody_asks_for_are_dropped() -> None:
    shared, src, clock = setup()
    for k in ("a", "b", "c"):
        await shared.get(k, src.fetch(k), 10)
    assert len(shared) == 3
    clock.t += 10
    await shared.get("a", src.fetch("a"), 10)  # a new read prunes what is stale
    assert len(shared) == 1


async def test_no_value_in_the_repr() -> None:
    shared, src, _ = setup()
    await shared.get("a", src.fetch("a"), 10)
    assert "a#1" not in repr(shared)
