"""`run_callers`: many simulated calls at once, each in its own room, and their summary."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from .core import Caller
from .report import CallReport, Summary, TurnResult


async def one_call(
    caller: Caller,
    turns: int,
    speech_s: float = 1.0,
    answer_timeout: float = 15.0,
    join_timeout: float = 30.0,
    on_turn: Callable[[Caller, TurnResult], None] | None = None,
) -> CallReport:
    try:
        await caller.connect()
        if not await caller.wait_agent(join_timeout):
            caller.report.errors.append(f"no agent joined {caller.room_name} in {join_timeout}s")
            return caller.report
        for _ in range(turns):
            result = await caller.turn(speech_s, answer_timeout)
            if on_turn is not None:
                on_turn(caller, result)
    except Exception as e:  # a failed call is a result, not a crash of the fleet
        caller.report.errors.append(f"{type(e).__name__}: {e}")
    finally:
        await caller.close()
    return caller.report


async def run_callers(
    n: int,
    turns: int,
    *,
    url: str,
    api_key: str,
    api_secret: str,
    agent_name: str | None,
    speech_s: float = 1.0,
    answer_timeout: float = 15.0,
    join_timeout: float = 30.0,
    dispatch: str = "token",
    room_prefix: str | None = None,
    stagger_s: float = 0.1,
    on_turn: Callable[[Caller, TurnResult], None] | None = None,
) -> Summary:
    """`n` callers, each in room `<prefix>-<i>`, each speaking `turns` turns."""
    prefix = room_prefix or f"call-{uuid.uuid4().hex[:6]}"

    async def call(i: int) -> CallReport:
        await asyncio.sleep(i * stagger_s)  # a ramp, not a thundering herd
        caller = Caller(
            url,
            api_key,
            api_secret,
            room=f"{prefix}-{i}",
            agent_name=agent_name,
            identity=f"caller-{i}",
            dispatch=dispatch,
        )
        return await one_call(caller, turns, speech_s, answer_timeout, join_timeout, on_turn)

    reports = await asyncio.gather(*(call(i) for i in range(n)))
    return Summary(list(reports))
