"""Chaos with live calls: one fault at a time on a fleet of two real workers, with calls on
both, counted by the callers. Shared by tests/e2e/test_chaos.py and bench/chaos.py.

A round: both workers registered; `calls` callers are dispatched (LiveKit spreads them) and
answered; the worker serving the most of them is hit; then every caller speaks again.
The faulted worker's callers ("victims") must get exactly one new agent and be answered;
the other worker's callers ("bystanders") must keep their agent and be answered. No caller
may ever see two agents at once (`CallReport.max_agents`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicefleet_testbed.caller import Caller
from voicefleet_testbed.stack import Stack

from ..operator.cluster import OperatorProcess
from .failover_scenario import SPEECH_S, WorkerFleet, until
from .fleet import agent_listening

# Where the worker is gone (its process or pod): a new agent at once. Where it hangs: once
# the kubelet's readiness probe and the operator's own read both find it unresponsive.
# Where the operator died with it: the restarted operator finds the call from LiveKit.
GONE = ("sigkill", "force-delete")
HANG = ("sigstop",)
OPERATOR = ("operator-kill", "apiserver-restart")
FAULTS = GONE + HANG + OPERATOR
RECOVERY_S = {"sigkill": 30.0, "force-delete": 30.0, "sigstop": 45.0}
RECOVERY_OPERATOR_S = 90.0  # LiveKit drops the dead agent after ~20 s; then webhook or sweep
SETTLE_S = 3.0  # after recovery: no late second agent joins within this window


@dataclass
class CallOutcome:
    room: str
    victim: bool  # served by the faulted worker
    new_agent_s: float | None = None  # fault -> a new agent in the room (victims)
    answered: bool = False  # a turn after the fault was answered
    joins: int = 0
    leaves: int = 0
    max_agents: int = 0

    @property
    def ok(self) -> bool:
        """Recovered (victim) or undisturbed (bystander), and never two agents at once."""
        one_agent = self.max_agents <= 1
        if self.victim:
            return self.answered and self.new_agent_s is not None and self.joins == 2 and one_agent
        return self.answered and self.joins == 1 and self.leaves == 0 and one_agent


@dataclass
class Round:
    fault: str
    victim_pod: str
    calls: list[CallOutcome] = field(default_factory=list)

    @property
    def victims(self) -> list[CallOutcome]:
        return [c for c in self.calls if c.victim]

    @property
    def bystanders(self) -> list[CallOutcome]:
        return [c for c in self.calls if not c.victim]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a worker's job processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


class Chaos:
    """Faults against `fleet` (two workers on the node agent's node) and `op`."""

    def __init__(self, stack: Stack, fleet: WorkerFleet, op: OperatorProcess) -> None:
        self.stack, self.fleet, self.op = stack, fleet, op
        self.rounds = 0

    async def round(self, fault: str, calls: int = 3) -> Round:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        f = self.fleet
        self.rounds += 1
        await until(lambda: f.registered(2), 120, "2 registered workers")
        callers = [await f.call(f"chaos-{self.rounds}-{i}-{f.ns}") for i in range(calls)]
        try:
            served = {c.room_name: (await f.serving(c.room_name))[0] for c in callers}
            by_pod = Counter(p["metadata"]["name"] for p in served.values())
            victim_name = by_pod.most_common(1)[0][0]
            victim = next(p for p in served.values() if p["metadata"]["name"] == victim_name)
            hit = [c for c in callers if served[c.room_name]["metadata"]["name"] == victim_name]
            before = {c.room_name: c.report.agent_joins for c in callers}
            timeout = RECOVERY_S.get(fault, RECOVERY_OPERATOR_S)
            async with self._fault(fault, victim) as t0:
                outcomes = await asyncio.gather(
                    *(self._follow(c, c in hit, before[c.room_name], t0, timeout) for c in callers)
                )
                # a late second agent (a duplicate dispatch) would join within this window
                await asyncio.gather(*(self._settle(c) for c in callers))
            for c, o in zip(callers, outcomes, strict=True):
                o.joins, o.leaves = c.report.agent_joins, c.report.agent_leaves
                o.max_agents = c.report.max_agents
            return Round(fault, victim_name, list(outcomes))
        finally:
            for c in callers:
                await c.close()
                f.callers.remove(c)

    @contextlib.asynccontextmanager
    async def _fault(self, fault: str, pod: dict[str, Any]) -> AsyncIterator[float]:
        """Apply `fault` to `pod` (or the operator); yields the loop time it hit; undoes
        what it must on exit (a stopped worker is killed, so that it restarts)."""
        loop = asyncio.get_running_loop()
        stopped: list[int] = []
        if fault == "apiserver-restart":
            # the operator's watches and feeds must resume: then a worker dies
            await asyncio.to_thread(self.stack.restart, "kube-apiserver")
        if fault == "force-delete":
            await asyncio.to_thread(self.fleet.force_delete, pod)
        elif fault == "sigstop":  # the whole worker hangs, its job processes too
            stopped = process_tree(self.fleet.pid(pod))
            signal_all(stopped, signal.SIGSTOP)
        else:
            self.fleet.kill(pod)
        t0 = loop.time()
        if fault == "operator-kill":
            assert self.op.proc is not None
            self.op.proc.kill()  # the operator dies with the worker, mid-failover
            await asyncio.to_thread(self.op.proc.wait, 10)
            await asyncio.to_thread(self.op.start)
        try:
            yield t0
        finally:
            signal_all(stopped, signal.SIGKILL)

    @staticmethod
    async def _settle(c: Caller) -> None:
        joins = c.report.agent_joins
        await c.changes.wait_for(lambda: c.report.agent_joins > joins, SETTLE_S)

    @staticmethod
    async def _follow(
        c: Caller, victim: bool, joins: int, t0: float, timeout: float
    ) -> CallOutcome:
        loop = asyncio.get_running_loop()
        out = CallOutcome(c.room_name, victim)
        deadline = t0 + timeout
        if victim:
            if not await c.changes.wait_for(
                lambda: c.report.agent_joins > joins, deadline - loop.time()
            ):
                return out
            out.new_agent_s = loop.time() - t0
            # As a client app does (fleet.join): talk once the new agent listens. Talking
            # over a resumed agent's session start left it deaf for the rest of the call in
            # 3 of ~70 failovers (docs/failover.md, Limits); that is not what this measures.
            while not agent_listening(c):
                if loop.time() > deadline:
                    return out
                await asyncio.sleep(0.05)
        # Speak until answered.
        while loop.time() < deadline:
            await c.speak_turn(SPEECH_S)
            if await c.wait_agent_audio(max(1.0, min(6.0, deadline - loop.time()))) is not None:
                out.answered = True
                await c.wait_agent_quiet(15)
                break
        return out
