"""Failover with real voicefleet workers: one VoiceAgent of `ghcr.io/voicefleet/worker`
pods (the image table runs `python -m voicefleet_worker`), its own Realtime stand-in
scenario, simulated WebRTC callers, and the ways a serving worker dies.

Shared by tests/e2e/test_failover_calls.py and bench/failover.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from voicefleet_contract import METRICS_PORT
from voicefleet_contract.sessions import SessionsReport, parse_sessions
from voicefleet_operator.fleet import ChildNames
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.procs import start_time
from voicefleet_testbed.realtime import StandInClient
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

from ..operator.cluster import OperatorProcess, secrets, sessions_headers, voiceagent

WORKER_IMAGE = "ghcr.io/voicefleet/worker:0.1.0"
SPEECH_S = 0.6  # the caller's turn after a failover: short, the answer is what counts
SILENCE_MS = 300
T = TypeVar("T")


async def until(fn: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll `fn` (4/s) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except Exception as e:  # a blip while waiting is not the failure
            last = e
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def samples(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def operator_metric(op: OperatorProcess, name: str, **labels: str) -> float:
    return samples(op.metrics(), name, **labels)


def _get(url: str, headers: dict[str, str] | None = None) -> str:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=2) as r:
        return str(r.read().decode())


@dataclass
class Recovery:
    """One serving worker killed mid-call, seen from the caller."""

    how: str  # "sigkill" or "force-delete"
    room: str
    first_agent: str
    new_agent: str | None = None
    rejoin_s: float | None = None  # kill -> a new agent participant present for the caller
    heard_s: float | None = None  # kill -> the caller hears the new agent answer its turn
    turn_latency_s: float | None = None  # that turn: end of speech -> agent audio
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def recovered(self) -> bool:
        return self.heard_s is not None


class WorkerFleet:
    """One VoiceAgent of real workers with failover on, and its callers."""

    def __init__(
        self, stack: Stack, kube: Kube, namespace: str, name: str, livekit_url: str = ""
    ) -> None:
        self.stack, self.kube, self.ns, self.name = stack, kube, namespace, name
        # The URL workers and callers use: the stack's node unless told (a balanced one).
        self.livekit_url = livekit_url or stack.livekit_url
        self.agent_name = f"{name}-{namespace[-5:]}"
        self.scenario = self.agent_name
        self.standin = StandInClient(stack.realtime_url, scenario=self.scenario)
        self.callers: list[Caller] = []
        self.replicas = 0

    # --- set-up ----------------------------------------------------------------------------
    async def start(
        self,
        replicas: int = 2,
        timeout: float = 180,
        max_per_worker: int = 4,
        spread: bool = False,
        env: dict[str, str] | None = None,
        agent: dict[str, str] | None = None,
        drain_timeout: int = 5,
    ) -> None:
        """`spread`: the workers spread evenly over the nodes (a topology spread constraint
        on the hostname, as a team running agents on several nodes sets), so that a node
        lost takes only its share. `env`: spec.template.env of the workers; `agent`:
        spec.agent."""
        self.replicas = replicas
        await self.standin.reset()
        await self.standin.configure(modelDelayMs=200, responseMs=800)
        secrets(self.kube, self.ns, self.stack.livekit_secret)
        spec: dict[str, Any] = {
            "agentName": self.agent_name,
            "livekit": {"url": self.livekit_url, "credentialsSecret": "livekit"},
            "model": {
                "apiKeySecret": {"name": "openai"},
                "baseURL": self.stack.openai_base_url(self.scenario),
                "turnDetection": {"type": "server_vad", "silenceDurationMs": SILENCE_MS},
            },
            "sessions": {"maxPerWorker": max_per_worker, "drainTimeoutSeconds": drain_timeout},
            "autoscaling": {"mode": "none"},
            "replicas": replicas,
            "template": {"image": WORKER_IMAGE},
        }
        if agent:
            spec["agent"] = agent
        if env:
            spec["template"]["env"] = [{"name": k, "value": v} for k, v in env.items()]
        if spread:
            spec["template"]["topologySpreadConstraints"] = [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": self.name}},
                }
            ]
        self.kube.create(voiceagent(self.name, self.ns, spec))
        await until(lambda: self.registered(replicas), timeout, f"{replicas} registered workers")

    def deployment_env(self) -> dict[str, str]:
        """The worker container's literal env values as the operator rendered them."""
        name = ChildNames.of(self.name).deployment
        d: Any = self.kube.apps.read_namespaced_deployment(name, self.ns)
        env = d.spec.template.spec.containers[0].env or []
        return {e.name: e.value for e in env if e.value is not None}

    def pods(self) -> list[dict[str, Any]]:
        items = self.kube.core.list_namespaced_pod(
            self.ns, label_selector=f"app.kubernetes.io/instance={self.name}"
        ).items
        return [self.kube.api.sanitize_for_serialization(p) for p in items]  # type: ignore[no-untyped-call]

    def live_pods(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.pods()
            if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")
        ]

    def worker_metric(self, pod: dict[str, Any], name: str, **labels: str) -> float:
        text = _get(f"http://{pod['status']['podIP']}:{METRICS_PORT}/metrics")
        return samples(text, name, **labels)

    def sessions(self, pod: dict[str, Any]) -> SessionsReport:
        text = _get(
            f"http://{pod['status']['podIP']}:{METRICS_PORT}/sessions",
            sessions_headers(self.kube, pod),
        )
        return parse_sessions(json.loads(text))

    async def registered(self, n: int) -> list[dict[str, Any]] | None:
        """`n` live worker pods, every one registered with LiveKit."""

        def check() -> list[dict[str, Any]] | None:
            pods = self.live_pods()
            ok = [p for p in pods if self.worker_metric(p, "voicefleet_worker_registered") == 1]
            return ok if len(ok) == n == len(pods) else None

        return await asyncio.to_thread(check)

    # --- calls -----------------------------------------------------------------------------
    async def call(self, room: str, metadata: str = "") -> Caller:
        """A caller joins `room`, the app dispatches our agent (CreateDispatch), the agent
        answers a first turn."""
        caller = Caller(
            self.livekit_url,
            LIVEKIT_KEY,
            self.stack.livekit_secret,
            room=room,
            agent_name=self.agent_name,
            dispatch="api",
            metadata=metadata or json.dumps({"room": room}),
            drop_window_s=30,
        )
        self.callers.append(caller)
        await caller.connect()
        assert await caller.wait_agent(30), f"no agent joined {room}"
        turn = await caller.turn(SPEECH_S, timeout=20)
        assert turn.latency_s is not None, f"the agent in {room} never answered"
        return caller

    async def serving(self, room: str) -> tuple[dict[str, Any], str]:
        """The pod whose worker lists `room` in /sessions, and the agent identity it gives."""

        def check() -> tuple[dict[str, Any], str] | None:
            for p in self.live_pods():
                try:
                    report = self.sessions(p)
                except OSError:
                    continue
                for r in report.rooms:
                    if r.room == room and r.participant:
                        return p, r.participant
            return None

        return await until(lambda: asyncio.to_thread(check), 15, f"a worker serving {room}")

    # --- ways to die -----------------------------------------------------------------------
    def pid(self, pod: dict[str, Any]) -> int:
        """The worker container's main process (its hollow node's agent records it)."""
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]["name"]
        pods_dir = self.stack.pods_dir_of(pod["spec"]["nodeName"])
        pid_s, started = (pods_dir / self.ns / name / f"{container}.pid").read_text().split()
        pid = int(pid_s)
        assert start_time(pid) == int(started), f"{name}: its process is not the one recorded"
        return pid

    def kill(self, pod: dict[str, Any]) -> None:
        """SIGKILL the worker container's main process (the node agent restarts it)."""
        os.kill(self.pid(pod), signal.SIGKILL)

    def force_delete(self, pod: dict[str, Any]) -> None:
        self.kube.core.delete_namespaced_pod(
            pod["metadata"]["name"], self.ns, grace_period_seconds=0
        )

    async def fail_over(self, caller: Caller, how: str, timeout: float = 30) -> Recovery:
        """Kill the worker serving `caller`'s call; until a new agent answers a turn."""
        room = caller.room_name
        pod, first = await self.serving(room)
        assert first in caller.agents, (first, caller.agents)
        rec = Recovery(how, room, first)
        joins = caller.report.agent_joins
        loop = asyncio.get_running_loop()
        if how == "sigkill":
            self.kill(pod)
        elif how == "force-delete":
            await asyncio.to_thread(self.force_delete, pod)
        else:
            raise ValueError(how)
        t0 = loop.time()
        if not await caller.changes.wait_for(lambda: caller.report.agent_joins > joins, timeout):
            rec.report = caller.report.to_dict()
            return rec
        rec.rejoin_s = loop.time() - t0
        rec.new_agent = next((a for a in caller.agents if a != first), None)
        # The caller speaks as soon as the new agent is there: the failover is over when it
        # is heard again, whenever its session is ready to listen.
        deadline = t0 + timeout
        while loop.time() < deadline:
            end = await caller.speak_turn(SPEECH_S)
            latency = await caller.wait_agent_audio(max(1.0, min(6.0, deadline - loop.time())))
            if latency is not None:
                rec.heard_s = end + latency - t0
                rec.turn_latency_s = latency
                await caller.wait_agent_quiet(15)
                break
        rec.report = caller.report.to_dict()
        return rec

    async def close(self) -> None:
        for c in self.callers:
            await c.close()
        self.callers.clear()
