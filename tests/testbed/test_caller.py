"""The simulated caller against the testbed's REAL LiveKit server and a tiny echo agent.

The echo agent (`voicefleet_testbed.caller.echo`, also the call benchmark's baseline) is a
participant of kind AGENT written with the rtc SDK alone: it hears the caller's speech end
(energy VAD), waits a known delay, then plays a tone; it falls silent when the caller talks
over it. The caller's measured latency must be at least that delay
and within a sane bound of it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from livekit import api

from voicefleet_contract.livekit_url import http_url
from voicefleet_testbed.caller import Caller, echo, run_callers
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

pytestmark = pytest.mark.livekit
SILENCE_MS = 300  # the echo agent's end-of-speech silence


class EchoAgent(echo.EchoAgent):
    """The testbed's echo agent on this stack, with the tests' silence window."""

    def __init__(self, stack: Stack, room: str, delay_s: float, answer_s: float = 1.0) -> None:
        super().__init__(
            stack.livekit_url,
            LIVEKIT_KEY,
            stack.livekit_secret,
            room,
            delay_s,
            answer_s,
            silence_ms=SILENCE_MS,
        )


@pytest.fixture
async def cleanup() -> AsyncIterator[Callable[[EchoAgent | Caller], None]]:
    things: list[EchoAgent | Caller] = []
    yield things.append
    for t in reversed(things):
        await (t.stop() if isinstance(t, EchoAgent) else t.close())


def caller_for(stack: Stack, room: str, **kw: object) -> Caller:
    return Caller(
        stack.livekit_url,
        LIVEKIT_KEY,
        stack.livekit_secret,
        room,
        agent_name=kw.pop("agent_name", "echo"),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def echo_call(
    stack: Stack,
    cleanup: Callable[[EchoAgent | Caller], None],
    prefix: str,
    delay_s: float,
    answer_s: float,
) -> tuple[EchoAgent, Caller]:
    """An echo agent already in a fresh room, and a caller who joined it and sees it."""
    room = f"{prefix}-{uuid.uuid4().hex[:6]}"
    agent = await EchoAgent(stack, room, delay_s=delay_s, answer_s=answer_s).start()
    cleanup(agent)
    caller = caller_for(stack, room, dispatch="none")
    cleanup(caller)
    await caller.connect()
    assert await caller.wait_agent(10)
    return agent, caller


async def test_turn_latency_against_an_echo_agent(
    stack: Stack, cleanup: Callable[[EchoAgent | Caller], None]
) -> None:
    room, delay = f"lat-{uuid.uuid4().hex[:6]}", 0.5
    caller = caller_for(stack, room)
    cleanup(caller)
    await caller.connect()
    agent = await EchoAgent(stack, room, delay_s=delay, answer_s=1.0).start()  # "dispatched"
    cleanup(agent)
    assert await caller.wait_agent(10)
    assert caller.report.dispatch_s is not None and caller.report.dispatch_s < 10
    for _ in range(2):
        t = await caller.turn(0.8, timeout=10)
        assert t.latency_s is not None, caller.report
        # the echo agent answers `delay` after it hears SILENCE_MS of quiet; WebRTC adds a bit
        assert delay <= t.latency_s < delay + SILENCE_MS / 1000 + 1.5, caller.report
        assert t.answer_s is not None and 0.5 < t.answer_s < 2.0, caller.report
    assert caller.report.first_audio_s is not None
    assert agent.answers == 2, (agent.vad_events, caller.report)
    assert not caller.report.dropped and caller.report.unanswered == 0


async def test_a_starved_caller_process_still_speaks_in_one_piece(
    stack: Stack, cleanup: Callable[[EchoAgent | Caller], None]
) -> None:
    """Many callers in one process starve its event loop. Their speech must still reach
    the agent whole: a gap on the wire is silence to the agent's VAD, which then ends the
    turn mid-sentence and answers before the caller is done (the rollout test's
    "unanswered" turns, whose answers came 2-3 s before the speech had been pushed out)."""
    agent, caller = await echo_call(stack, cleanup, "stall", delay_s=0.2, answer_s=0.6)
    assert await caller.changes.wait_for(lambda: caller.hears_agent, 10)

    async def hog() -> None:
        # The fault: the loop blocked 0.4 s at a time, longer than the VAD's 0.3 s window.
        while True:
            time.sleep(0.4)  # noqa: ASYNC251 (blocking the loop is the fault under test)
            await asyncio.sleep(0.02)

    starve = asyncio.create_task(hog())
    try:
        t = await caller.turn(1.0, timeout=15)
    finally:
        starve.cancel()
    assert t.latency_s is not None, (agent.vad_events, caller.report)
    # one utterance heard as one turn, answered once
    assert [k for k, _ in agent.vad_events] == ["start", "stop"], agent.vad_events
    assert agent.answers == 1, agent.vad_events


async def test_interrupt_stops_the_agent(
    stack: Stack, cleanup: Callable[[EchoAgent | Caller], None]
) -> None:
    agent, caller = await echo_call(stack, cleanup, "int", delay_s=0.1, answer_s=30.0)
    await caller.speak_turn(0.8)
    assert await caller.wait_agent_audio(10) is not None
    stopped = await caller.interrupt(0.8, timeout=5)
    assert stopped is not None and stopped < 3.0, caller.report
    assert agent.interrupted == 1
    # the interruption is a turn of its own, and gets its answer
    assert await caller.wait_agent_audio(10) is not None
    assert [t.interrupted for t in caller.report.turns] == [False, True]


async def test_token_and_api_dispatch_reach_livekit(
    stack: Stack, cleanup: Callable[[EchoAgent | Caller], None]
) -> None:
    async with api.LiveKitAPI(http_url(stack.livekit_url), LIVEKIT_KEY, stack.livekit_secret) as lk:
        for mode in ("token", "api"):
            room = f"disp-{mode}-{uuid.uuid4().hex[:6]}"
            caller = caller_for(stack, room, agent_name=f"agent-{mode}", dispatch=mode)
            cleanup(caller)
            await caller.connect()
            dispatches = await lk.agent_dispatch.list_dispatch(room)
            # a room created without agents in its configuration also gets LiveKit's
            # default dispatch (agent name "") for unnamed agents
            assert f"agent-{mode}" in [d.agent_name for d in dispatches]


async def test_agent_leaving_is_a_failover_or_a_drop(
    stack: Stack, cleanup: Callable[[EchoAgent | Caller], None]
) -> None:
    room = f"drop-{uuid.uuid4().hex[:6]}"
    first = await EchoAgent(stack, room, delay_s=0.1).start()
    caller = caller_for(stack, room, dispatch="none", drop_window_s=1.0)
    cleanup(caller)
    await caller.connect()
    assert await caller.wait_agent(10)
    await first.stop()  # the worker dies
    assert await caller.changes.wait_for(lambda: caller.report.agent_leaves == 1, 10)
    second = await EchoAgent(stack, room, delay_s=0.1).start()  # re-dispatched
    cleanup(second)
    assert await caller.changes.wait_for(lambda: caller.report.agent_joins == 2, 10)
    assert len(caller.report.failover_gaps_s) == 1 and not caller.report.dropped
    t = await caller.turn(0.8, timeout=10)
    assert t.latency_s is not None
    await second.stop()
    assert await caller.changes.wait_for(lambda: caller.report.dropped, 10)


async def test_run_callers_summary(
    stack: Stack, cleanup: Callable[[EchoAgent | Caller], None]
) -> None:
    prefix = f"fleet-{uuid.uuid4().hex[:6]}"
    for i in range(2):
        cleanup(await EchoAgent(stack, f"{prefix}-{i}", delay_s=0.2, answer_s=0.6).start())
    summary = await run_callers(
        2,
        2,
        url=stack.livekit_url,
        api_key=LIVEKIT_KEY,
        api_secret=stack.livekit_secret,
        agent_name="echo",
        speech_s=0.8,
        answer_timeout=10,
        join_timeout=10,
        room_prefix=prefix,
    )
    s = summary.to_dict()
    assert summary.ok(), s
    assert s["calls"] == 2 and s["answered"] == 4 and s["agentJoined"] == 2
    assert 0.2 <= s["latency"]["p50"] < 3.0


async def test_cli_prints_turns_and_a_summary(
    stack: Stack, cleanup: Callable[[EchoAgent | Caller], None]
) -> None:
    import json
    import os
    import sys

    prefix = f"cli-{uuid.uuid4().hex[:6]}"
    cleanup(await EchoAgent(stack, f"{prefix}-0", delay_s=0.2, answer_s=0.5).start())
    env = {**os.environ, **{k: v for k, v in stack.env().items() if k.startswith("LIVEKIT_")}}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicefleet_testbed.caller",
        "--agent=echo",
        "--callers=1",
        "--turns=2",
        "--speech-seconds=0.8",
        f"--room-prefix={prefix}",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert f"{prefix}-0 turn 1: latency " in text and f"{prefix}-0 turn 2: latency " in text
    summary = json.loads(text[text.index("{") :])
    assert summary["answered"] == 2 and summary["dropped"] == 0
