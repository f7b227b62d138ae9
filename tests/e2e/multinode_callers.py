"""Callers of tests/e2e/test_multinode_calls.py, run as a process of their own:
`python -m tests.e2e.multinode_callers` (from the repository root).

Twenty real WebRTC callers in the test's one process starve its event loop on the 2-core
testbed (a track took 10 s to publish, a CreateDispatch never left), so the test spreads
them over a few of these processes. The protocol is JSON lines: the test writes the call
plan on stdin; this answers `joined` once every caller joined, had its agent and was
answered (or failed); on `{"kill": t0}` (the test's `time.monotonic()` at the node kill:
the same clock in every process) every caller tries to be heard again and this answers
`outcomes`; on EOF the callers hang up and the process exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from livekit import rtc

from voicefleet_testbed.caller import Caller

from .fleet import agent_listening

SPEECH_S = 0.6
TURNS = 3
TURN_S = 30.0  # end of speech -> agent audio, on a loaded 2-core machine (as fleet.py)
# A join through the relay to a room on the other node goes over Redis; with 20 calls and
# other stacks on the 2-core machine the SDK's own retries took over 60 s for the last
# rooms (LiveKit: "request canceled"). The caller waits like an app that keeps trying.
JOIN_WAIT_S = 150.0
JOIN_BATCH = 1  # callers of one process joining at once (4 processes: 4 at once)


@dataclass
class Outcome:
    room: str
    answered_before: bool
    errors: list[str]
    outcome: str = ""  # kept, recovered, lost
    heard_s: float | None = None  # kill -> the caller heard an agent answer again
    agent_joins: int = 0  # after the kill, until the end of the window
    max_agents: int = 0  # most agents in the room at once, until the end of the window
    longest_overlap_s: float = 0.0  # the longest time two agents were in the room together
    two_at_end: bool = False  # two agents still in the room when the window closed
    agent_left_s: float | None = None  # kill -> the caller saw its agent leave
    same_agent: bool | None = None  # the agent heard again is the one from before the kill


async def join(caller: Caller) -> bool:
    """Join, wait for the agent to listen, speak one turn: answered?"""
    try:
        await asyncio.wait_for(caller.connect(), JOIN_WAIT_S)
    except TimeoutError:
        caller.report.errors.append(f"could not join in {JOIN_WAIT_S:.0f} s")
        return False
    if not await caller.wait_agent(60):
        caller.report.errors.append("no agent in 60 s")
        return False
    deadline = time.monotonic() + 30
    while not agent_listening(caller):
        if time.monotonic() > deadline:
            caller.report.errors.append("the agent did not listen in 30 s")
            return False
        await asyncio.sleep(0.1)
    # A turn the 2-core machine was too busy to answer in time is asked again (up to
    # TURNS): the call is answered when the caller hears its agent answer.
    for i in range(TURNS):
        turn = await caller.turn(SPEECH_S, timeout=TURN_S)
        if turn.latency_s is not None:
            return True
        caller.report.errors.append(f"turn {i + 1} unanswered in {TURN_S:.0f} s")
    return False


async def heard_again(caller: Caller, t0: float, window: float, out: Outcome) -> None:
    """After the kill: until an agent listens and answers a turn, or `window` passes. A
    caller whose SDK gave up (disconnected) is lost: nothing brings it back."""
    joins = caller.report.agent_joins
    leaves = caller.report.agent_leaves
    first = set(caller.agents)
    deadline = t0 + window
    while time.monotonic() < deadline:
        if out.agent_left_s is None and caller.report.agent_leaves > leaves:
            out.agent_left_s = time.monotonic() - t0
        if caller.room.connection_state == rtc.ConnectionState.CONN_DISCONNECTED:
            out.errors.append("the caller's connection gave up")
            break
        if not agent_listening(caller):
            await asyncio.sleep(0.2)
            continue
        end = await caller.speak_turn(SPEECH_S)
        latency = await caller.wait_agent_audio(6.0)
        if latency is not None:
            out.heard_s = end + latency - t0
            out.outcome = "recovered" if caller.report.agent_leaves > leaves else "kept"
            out.same_agent = set(caller.agents) == first
            await caller.wait_agent_quiet(15)
            break
    out.outcome = out.outcome or "lost"
    # A second agent can come later than the answer (a second dispatch), and must leave
    # again: the whole window is observed.
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    out.agent_joins = caller.report.agent_joins - joins
    out.max_agents = caller.report.max_agents
    out.two_at_end = len(caller.agents) >= 2
    out.longest_overlap_s = max(caller.report.longest_overlap_s, caller.overlap_s())


def say(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


async def main() -> None:
    plan = json.loads(await asyncio.to_thread(sys.stdin.readline))
    callers = [
        Caller(
            plan["url"],
            plan["key"],
            plan["secret"],
            room=room,
            agent_name=plan["agent_name"],
            dispatch=plan.get("dispatch", "api"),
            metadata=json.dumps({"room": room}),
            drop_window_s=plan["window"],
        )
        for room in plan["rooms"]
    ]
    try:
        answered: list[bool] = []
        for b in range(0, len(callers), JOIN_BATCH):
            answered += await asyncio.gather(*(join(c) for c in callers[b : b + JOIN_BATCH]))
        outs = [
            Outcome(c.room_name, a, list(c.report.errors))
            for c, a in zip(callers, answered, strict=True)
        ]
        say({"joined": [asdict(o) for o in outs]})
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        t0 = float(json.loads(line)["kill"])
        await asyncio.gather(
            *(heard_again(c, t0, plan["window"], o) for c, o in zip(callers, outs, strict=True))
        )
        say({"outcomes": [asdict(o) for o in outs]})
        await asyncio.to_thread(sys.stdin.readline)  # until the test is done with us
    finally:
        await asyncio.gather(*(c.close() for c in callers), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
