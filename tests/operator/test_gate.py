"""gate.py: free slots go to the most urgent waiter."""

from __future__ import annotations

import asyncio

import pytest

from voicefleet_operator.gate import PriorityGate


async def test_waiters_get_slots_by_priority_then_arrival() -> None:
    gate = PriorityGate(1)
    order: list[str] = []

    async def job(name: str, priority: int) -> None:
        async with gate.slot(priority):
            order.append(name)
            await asyncio.sleep(0)

    await gate.acquire(0)  # the only slot is taken
    tasks = [
        asyncio.create_task(job(name, prio))
        for name, prio in [("status-1", 2), ("rest-1", 1), ("deploy-1", 0), ("deploy-2", 0)]
    ]
    await asyncio.sleep(0)
    assert gate.waiting == 4
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["deploy-1", "deploy-2", "rest-1", "status-1"]


async def test_no_more_holders_than_slots() -> None:
    gate = PriorityGate(3)
    holding = peak = 0

    async def job(i: int) -> None:
        nonlocal holding, peak
        async with gate.slot(i % 3):
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(0.001)
            holding -= 1

    await asyncio.gather(*(job(i) for i in range(30)))
    assert peak == 3 and gate.waiting == 0


async def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    gate = PriorityGate(1)
    await gate.acquire(0)
    cancelled = asyncio.create_task(gate.acquire(0))
    waiting = asyncio.create_task(gate.acquire(1))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    gate.release()
    await asyncio.wait_for(waiting, 1)
    gate.release()
    await asyncio.wait_for(gate.acquire(2), 1)  # the slot came back
