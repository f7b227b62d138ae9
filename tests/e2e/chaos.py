"""Chaos with live calls: one fault at a time on a fleet of two real workers, with calls on
both, counted by the callers. Shared by tests/e2e/test_chaos.py and bench/chaos.py.

A round: both workers registered; `calls` callers are dispatched (LiveKit spreads them) and
answered; the worker serving the most of them is hit; then every caller speaks again.
The faulted worker's callers ("victims") must get exactly one new agent and be answered;
the other worker's callers ("bystanders") must keep their agent and be answered. A
partition (the operator cut off from a healthy worker) must fail over nobody: its victims
keep their agents too. No caller may ever see two agents at once (`CallReport.max_agents`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicefleet_contract import METRICS_PORT
from voicefleet_testbed import hollow_nodes as hollow
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.procs import start_time
from voicefleet_testbed.stack import Stack

from ..operator.cluster import OperatorProcess
from .failover_scenario import SPEECH_S, WorkerFleet, operator_metric, until
from .fleet import agent_listening

# Where the worker is gone (its process or pod): a new agent at once. Where it hangs: once
# the kubelet's readiness probe and the operator's own read both find it unresponsive.
# Where the operator died with it: the restarted operator finds the call from LiveKit.
# Where only the operator loses the worker (its /sessions requests dropped, as a network
# partition between the operator and one node does): nobody may be failed over.
GONE = ("sigkill", "force-delete")
HANG = ("sigstop",)
OPERATOR = ("operator-kill", "apiserver-restart")
BLIP = ("partition",)
FAULTS = GONE + HANG + OPERATOR + BLIP
# A whole hollow node lost at once, as a machine that loses power: its node agent (the
# kubelet) SIGKILLed and every container process on it SIGSTOPped, so nothing answers and
# nothing closes a connection; nothing on the node reports it. Needs the fleet spread over
# two hollow nodes (`Stack.add_hollow_node`, `WorkerFleet.start(spread=True)`); after the
# round the node comes back (its processes killed, the node agent restarted, as a reboot).
NODE = ("node-gone",)
# With two operator replicas under kopf peering (test_chaos_ha.py): the active one killed
# with the worker, and not restarted; the standby takes over once the leader's peering
# record expires (60 s).
HA = ("leader-kill",)
RECOVERY_S = {"sigkill": 30.0, "force-delete": 30.0, "sigstop": 45.0, "partition": 30.0,
              "leader-kill": 150.0, "node-gone": 90.0}  # fmt: skip
# Longer than the operator's long poll of a worker (20 s, then 5 s to give up on it) and its
# sweep (10 s): time enough for it to notice the cut, and to act wrongly on it.
PARTITION_S = 35.0
RECOVERY_OPERATOR_S = 90.0  # LiveKit drops the dead agent after ~20 s; then webhook or sweep
SETTLE_S = 3.0  # after recovery: no late second agent joins within this window


@dataclass
class CallOutcome:
    room: str
    victim: bool  # served by the faulted worker
    expect_new_agent: bool  # its worker is gone or hangs (not a partition, not a bystander)
    new_agent_s: float | None = None  # fault -> a new agent in the room (victims)
    answered: bool = False  # a turn after the fault was answered
    joins: int = 0
    leaves: int = 0
    max_agents: int = 0

    @property
    def ok(self) -> bool:
        """Recovered (victim) or undisturbed (bystander), and never two agents at once."""
        one_agent = self.max_agents <= 1
        if self.expect_new_agent:
            return self.answered and self.new_agent_s is not None and self.joins == 2 and one_agent
        return self.answered and self.joins == 1 and self.leaves == 0 and one_agent


@dataclass
class Round:
    fault: str
    victim_pod: str  # for node-gone: "node/<name>"
    calls: list[CallOutcome] = field(default_factory=list)
    # The operator's failed /sessions reads during the round: the proof a partition cut it.
    read_failures: float = 0.0

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


def _connections(pid: int, pod_ip: str, port: int) -> list[int]:
    """Local ports of `pid`'s established TCP connections to pod_ip:port (from `ss`)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", "dst", f"{pod_ip}:{port}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return [
        int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines() if f"pid={pid}," in line
    ]


def cut(pod_ip: str, operator_pid: int) -> list[list[str]]:
    """Cut the operator off from a worker's `/sessions`, as a broken network between them
    would, and return the iptables rules that do it (`heal` removes them): its requests for
    `/sessions` are dropped (new connections, retransmissions), and so is everything on the
    connections it already holds to the worker's port, both ways (its long poll). The
    worker, its LiveKit connection and the node's readiness probe (`/ready`, same port, its
    own connections) go on. In a cluster the kubelet probes from the node and the operator
    comes from elsewhere; here both are on the host with one source address, so the cut is
    made on what the operator sends and holds, not on an address."""
    port = str(METRICS_PORT)
    rules = [["OUTPUT", "-d", f"{pod_ip}/32", "-p", "tcp", "--dport", port, "-m", "string",
              "--algo", "bm", "--string", "GET /sessions", "-j", "DROP"]]  # fmt: skip
    for local in _connections(operator_pid, pod_ip, METRICS_PORT):
        rules += [
            ["OUTPUT", "-d", pod_ip, "-p", "tcp", "--sport", str(local), "--dport", port, "-j", "DROP"],
            ["OUTPUT", "-s", pod_ip, "-p", "tcp", "--sport", port, "--dport", str(local), "-j", "DROP"],
        ]  # fmt: skip
    for rule in rules:
        subprocess.run(["iptables", "-w", "-I", *rule], check=True, timeout=30)
    return rules


def heal(rules: list[list[str]]) -> None:
    for rule in rules:
        subprocess.run(["iptables", "-w", "-D", *rule], check=False, timeout=30)


def node_processes(pods_dir: Path) -> list[int]:
    """Every container process a hollow node's agent runs (its pid files, checked against
    each process's start time), with their descendants."""
    out: list[int] = []
    for pid_file in pods_dir.glob("*/*/*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid_s, started = pid_file.read_text().split()
            if start_time(int(pid_s)) == int(started):
                out += process_tree(int(pid_s))
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
        if fault not in FAULTS + HA + NODE:
            raise ValueError(f"fault must be one of {', '.join(FAULTS + HA + NODE)}")
        f = self.fleet
        self.rounds += 1
        await until(lambda: f.registered(f.replicas), 120, f"{f.replicas} registered workers")
        callers = [await f.call(f"chaos-{self.rounds}-{i}-{f.ns}") for i in range(calls)]
        try:
            served = {c.room_name: (await f.serving(c.room_name))[0] for c in callers}
            by_pod = Counter(p["metadata"]["name"] for p in served.values())
            victim_name = by_pod.most_common(1)[0][0]
            victim = next(p for p in served.values() if p["metadata"]["name"] == victim_name)
            hit = [c for c in callers if served[c.room_name]["metadata"]["name"] == victim_name]
            if fault in NODE:  # every call on the busiest worker's node
                node = victim["spec"]["nodeName"]
                victim_name = f"node/{node}"
                hit = [c for c in callers if served[c.room_name]["spec"]["nodeName"] == node]
            before = {c.room_name: c.report.agent_joins for c in callers}
            timeout = RECOVERY_S.get(fault, RECOVERY_OPERATOR_S)
            fails_over = fault not in BLIP
            failed_reads = self._read_failures()
            async with self._fault(fault, victim) as t0:
                outcomes = await asyncio.gather(
                    *(
                        self._follow(
                            c, c in hit, c in hit and fails_over, before[c.room_name], t0, timeout
                        )
                        for c in callers
                    )
                )
                # a late second agent (a duplicate dispatch) would join within this window;
                # a partition is held that long
                window = SETTLE_S if fails_over else PARTITION_S
                await asyncio.gather(*(self._settle(c, window) for c in callers))
                failed_reads = self._read_failures() - failed_reads
            for c, o in zip(callers, outcomes, strict=True):
                o.joins, o.leaves = c.report.agent_joins, c.report.agent_leaves
                o.max_agents = c.report.max_agents
            return Round(fault, victim_name, list(outcomes), failed_reads)
        finally:
            for c in callers:
                await c.close()
                f.callers.remove(c)

    def _read_failures(self) -> float:
        """The operator's failed /sessions reads of this fleet so far (0 when it is down)."""
        with contextlib.suppress(OSError):
            return operator_metric(self.op, "voicefleet_autoscaler_scrape_failures_total",
                                   namespace=self.fleet.ns, voiceagent=self.fleet.name)  # fmt: skip
        return 0.0

    @contextlib.asynccontextmanager
    async def _fault(self, fault: str, pod: dict[str, Any]) -> AsyncIterator[float]:
        """Apply `fault` to `pod` (or the operator); yields the loop time it hit; undoes
        what it must on exit (a stopped worker is killed, so that it restarts)."""
        loop = asyncio.get_running_loop()
        stopped: list[int] = []
        rules: list[list[str]] = []
        if fault == "apiserver-restart":
            # the operator's watches and feeds must resume: then a worker dies
            await asyncio.to_thread(self.stack.restart, "kube-apiserver")
        if fault == "partition":
            assert self.op.proc is not None
            rules = cut(pod["status"]["podIP"], self.op.proc.pid)
        elif fault == "force-delete":
            await asyncio.to_thread(self.fleet.force_delete, pod)
        elif fault == "sigstop":  # the whole worker hangs, its job processes too
            stopped = process_tree(self.fleet.pid(pod))
            signal_all(stopped, signal.SIGSTOP)
        elif fault == "node-gone":
            node = pod["spec"]["nodeName"]
            stopped = node_processes(self.stack.pods_dir_of(node))
            signal_all(stopped, signal.SIGSTOP)
            self.stack.kill_part(hollow.part(hollow.number(node) or 1))
        else:
            self.fleet.kill(pod)
        t0 = loop.time()
        if fault in ("operator-kill", "leader-kill"):
            assert self.op.proc is not None
            self.op.proc.kill()  # the operator dies with the worker, mid-failover
            await asyncio.to_thread(self.op.proc.wait, 10)
            if fault == "operator-kill":
                await asyncio.to_thread(self.op.start)
        try:
            yield t0
        finally:
            signal_all(stopped, signal.SIGKILL)
            heal(rules)
            if fault == "node-gone":  # the node comes back, as after a reboot
                n = hollow.number(pod["spec"]["nodeName"]) or 1
                await asyncio.to_thread(self.stack.restart, hollow.part(n))

    @staticmethod
    async def _settle(c: Caller, window: float) -> None:
        joins = c.report.agent_joins
        await c.changes.wait_for(lambda: c.report.agent_joins > joins, window)

    @staticmethod
    async def _follow(
        c: Caller, victim: bool, expect_new_agent: bool, joins: int, t0: float, timeout: float
    ) -> CallOutcome:
        loop = asyncio.get_running_loop()
        out = CallOutcome(c.room_name, victim, expect_new_agent)
        deadline = t0 + timeout
        if expect_new_agent:
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
