"""Failover against the testbed's real LiveKit server and API server.

Workers are `mini_agent.py` pods (livekit-agents registered under the VoiceAgent's agent
name, no model); the caller is a real WebRTC participant (livekit rtc). LiveKit's webhooks
are signed by LiveKit itself and sent to the operator (Stack.webhook_url).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml
from google.protobuf.json_format import MessageToJson
from livekit import api, rtc
from prometheus_client.parser import text_string_to_metric_families

from voicefleet_contract.one_agent import AGENT_NAME_ATTRIBUTE
from voicefleet_operator.failover import KIND_AGENT
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

from .cluster import REPO, OperatorProcess, secrets, voiceagent
from .util import OPENAI_BASE_URL

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow]
MINI_IMAGE = "voicefleet.dev/test/mini-agent:1"
T = TypeVar("T")


# --- helpers ------------------------------------------------------------------------------


async def until(fn: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except Exception as e:  # a blip while waiting is not the test's failure
            last = e
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def stays(fn: Callable[[], Awaitable[Any]], seconds: float, what: str) -> None:
    """Absence can only be observed over a window: `fn` must hold throughout (it returns
    True, or a falsy value / a description of what it found instead)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = await fn()
        assert got is True, f"{what}: {got!r}"
        await asyncio.sleep(0.5)


def install_mini_agent(stack: Stack) -> None:
    rule = {
        "image": "voicefleet.dev/test/mini-agent*",
        "entrypoint": ["{python}", str(REPO / "tests/operator/mini_agent.py")],
        "env": {"PYTHONUNBUFFERED": "1"},
    }
    path = stack.image_override
    existing: list[dict[str, Any]] = yaml.safe_load(path.read_text()) if path.exists() else []
    path.write_text(
        yaml.safe_dump([rule, *[r for r in existing or [] if r.get("image") != rule["image"]]])
    )


def metric(op: OperatorProcess, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(op.metrics()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class Fleet:
    """One VoiceAgent of mini agents, a LiveKit API client and callers."""

    def __init__(self, stack: Stack, kube: Kube, namespace: str, name: str) -> None:
        self.stack, self.kube, self.ns, self.name = stack, kube, namespace, name
        self.agent_name = f"{name}-{namespace[-5:]}"
        self.lk = api.LiveKitAPI(
            stack.livekit_url.replace("ws://", "http://"), LIVEKIT_KEY, stack.livekit_secret
        )
        self.callers: list[rtc.Room] = []

    async def start(self, replicas: int = 2) -> None:
        install_mini_agent(self.stack)
        secrets(self.kube, self.ns, self.stack.livekit_secret)
        spec = {
            "agentName": self.agent_name,
            "livekit": {"url": self.stack.livekit_url, "credentialsSecret": "livekit"},
            "model": {"apiKeySecret": {"name": "openai"}, "baseURL": OPENAI_BASE_URL},
            "sessions": {"drainTimeoutSeconds": 5},
            "autoscaling": {"mode": "none"},
            "replicas": replicas,
            "template": {"image": MINI_IMAGE},
        }
        self.kube.create(voiceagent(self.name, self.ns, spec))
        await until(lambda: self._ready(replicas), 120, f"{replicas} ready mini agents")

    async def _ready(self, n: int) -> list[dict[str, Any]] | None:
        pods = self.pods()
        ok = [
            p
            for p in pods
            if p.get("status", {}).get("podIP")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions") or []
            )
        ]
        return ok if len(ok) == n else None

    def pods(self) -> list[dict[str, Any]]:
        items = self.kube.core.list_namespaced_pod(
            self.ns, label_selector=f"app.kubernetes.io/instance={self.name}"
        ).items
        return [self.kube.api.sanitize_for_serialization(p) for p in items]  # type: ignore[no-untyped-call]

    async def call(self, room: str, metadata: str) -> tuple[rtc.Room, str]:
        """A caller joins `room` and the app dispatches our agent; returns the agent's id."""
        token = (
            api.AccessToken(LIVEKIT_KEY, self.stack.livekit_secret)
            .with_identity(f"caller-{room}")
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )
        caller = rtc.Room()
        await caller.connect(self.stack.livekit_url, token)
        self.callers.append(caller)
        await self.lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=self.agent_name, room=room, metadata=metadata)
        )
        agents = await until(lambda: self.agents(room), 30, f"an agent in {room}")
        return caller, agents[0]

    async def participants(self, room: str) -> list[api.ParticipantInfo]:
        found = await self.lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        if not found.rooms:
            return []
        resp = await self.lk.room.list_participants(api.ListParticipantsRequest(room=room))
        return list(resp.participants)

    async def agents(self, room: str) -> list[str]:
        return [
            p.identity
            for p in await self.participants(room)
            if p.kind == KIND_AGENT and p.attributes.get(AGENT_NAME_ATTRIBUTE) == self.agent_name
        ]

    async def dispatches(self, room: str) -> list[api.AgentDispatch]:
        return [
            d
            for d in await self.lk.agent_dispatch.list_dispatch(room)
            if d.agent_name == self.agent_name
        ]

    async def serving_pod(self, room: str) -> dict[str, Any]:
        return await until(lambda: self._serving(room), 10, f"a pod serving {room}")

    async def _serving(self, room: str) -> dict[str, Any] | None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for p in self.pods():
                ip = p["status"].get("podIP")
                if not ip:
                    continue
                try:
                    async with http.get(f"http://{ip}:9464/sessions?test=1") as r:
                        rooms = [x["room"] for x in (await r.json())["rooms"]]
                except (aiohttp.ClientError, OSError):
                    continue
                if room in rooms:
                    return p
        return None

    async def seen_by_operator(self, pod: dict[str, Any], room: str) -> bool:
        url = f"http://{pod['status']['podIP']}:9464/control/seen?room={room}"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(url) as r,
        ):
            return bool((await r.json())["seen"] > 0)

    async def control(self, pod: dict[str, Any], what: str) -> None:
        url = f"http://{pod['status']['podIP']}:9464/control/{what}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            try:
                async with http.post(url) as r:
                    assert r.status == 200, await r.text()
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                pass  # crash: the process is gone before it answers

    def events(self, reason: str) -> list[str]:
        evs = self.kube.core.list_namespaced_event(self.ns).items
        return [
            e.message or ""
            for e in evs
            if e.reason == reason and e.involved_object.name == self.name
        ]

    async def close(self) -> None:
        for c in self.callers:
            await c.disconnect()
        await self.lk.aclose()


@asynccontextmanager
async def fleet(
    stack: Stack, kube: Kube, namespace: str, name: str, replicas: int = 2
) -> AsyncIterator[Fleet]:
    f = Fleet(stack, kube, namespace, name)
    try:
        await f.start(replicas)
        yield f
    finally:
        await f.close()


# --- tests --------------------------------------------------------------------------------


async def test_killed_agent_is_redispatched_exactly_once(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    async with fleet(stack, kube, namespace, "crashy") as f:
        room = f"call-{namespace}"
        _, first = await f.call(room, '{"caller": "+15550100"}')
        pod = await f.serving_pod(room)
        # The operator's per-second read of the worker has listed the call.
        await until(lambda: f.seen_by_operator(pod, room), 10, "the operator to see the call")
        await f.control(pod, "crash")  # SIGKILL mid-call
        t0 = time.monotonic()

        async def new_agent() -> list[str]:
            return [a for a in await f.agents(room) if a != first]

        second = (await until(new_agent, 30, "a new agent in the room"))[0]
        latency = time.monotonic() - t0
        dispatches = await f.dispatches(room)
        print(
            "dispatch states:",
            [(d.state.created_at, [j.state.status for j in d.state.jobs]) for d in dispatches],
        )
        assert len(dispatches) == 2, dispatches
        assert dispatches[1].metadata == '{"caller": "+15550100"}'
        # The dead agent lingers until LiveKit times it out (~20 s) and then LiveKit sends
        # participant_left (CONNECTION_TIMEOUT): that late notice must not dispatch again.
        await until(
            lambda: _without(f, room, first), 60, "LiveKit to drop the dead agent's participant"
        )
        accepted = metric(operator, "voicefleet_webhook_requests_total", result="accepted")
        assert accepted > 0

        async def one_agent_two_dispatches() -> Any:
            agents, dispatches = await f.agents(room), await f.dispatches(room)
            return True if agents == [second] and len(dispatches) == 2 else (agents, dispatches)

        await stays(one_agent_two_dispatches, 8, "exactly one new dispatch and one new agent")
        labels = {"namespace": namespace, "voiceagent": "crashy"}
        assert metric(operator, "voicefleet_failovers_total", outcome="redispatched", **labels) == 1
        assert metric(operator, "voicefleet_failover_orphans_found_total", **labels) == 1
        # The per-second worker view saw the worker die, long before LiveKit's webhook.
        sources = {
            src: metric(operator, "voicefleet_failover_orphans_found_total", source=src, **labels)
            for src in ("worker", "pod", "webhook", "sweep")
        }
        assert sources["worker"] == 1, (sources, latency)
        assert latency < 15, latency
        assert metric(operator, "voicefleet_failover_latency_seconds_count", **labels) == 1
        assert await asyncio.to_thread(f.events, "FailedOver")
        print(f"failover: new agent {second} {latency:.1f}s after the kill")


async def _without(f: Fleet, room: str, identity: str) -> bool:
    return identity not in [p.identity for p in await f.participants(room)]


async def test_deliberate_end_and_hang_up_are_not_failed_over(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    async with fleet(stack, kube, namespace, "calm") as f:
        ended, hung_up = f"ended-{namespace}", f"hungup-{namespace}"
        await f.call(ended, "m1")
        caller, agent = await f.call(hung_up, "m2")
        # The agent ends its call on purpose; the caller is still in the room.
        await f.control(await f.serving_pod(ended), f"end?room={ended}")
        await until(lambda: _no_agents(f, ended), 15, "the agent to leave on purpose")
        # The operator recorded the deliberate end by deleting that call's dispatch (what
        # keeps the sweep off the room, also after an operator restart).
        await until(lambda: _no_dispatch(f, ended), 15, "the ended call's dispatch deleted")
        # The caller hangs up; then the agent's worker dies.
        pod = await f.serving_pod(hung_up)
        await caller.disconnect()
        await until(lambda: _without(f, hung_up, f"caller-{hung_up}"), 15, "the caller gone")
        await f.control(pod, "crash")
        before = metric(operator, "voicefleet_webhook_requests_total", result="accepted")

        async def nothing_dispatched() -> Any:
            a, b = await f.dispatches(ended), await f.dispatches(hung_up)
            return True if not a and len(b) <= 1 else (a, b)

        await stays(nothing_dispatched, 12, "no re-dispatch")
        assert await f.agents(ended) == []
        labels = {"namespace": namespace, "voiceagent": "calm"}
        assert metric(operator, "voicefleet_failovers_total", outcome="redispatched", **labels) == 0
        assert metric(operator, "voicefleet_webhook_requests_total", result="accepted") >= before
        del agent


async def _no_dispatch(f: Fleet, room: str) -> bool:
    return not await f.dispatches(room)


async def _no_agents(f: Fleet, room: str) -> bool:
    return not await f.agents(room)


async def test_forged_webhook_changes_nothing(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    async with fleet(stack, kube, namespace, "forged", replicas=1) as f:
        room = f"forged-{namespace}"
        _, agent = await f.call(room, "m")
        forged = api.WebhookEvent(
            event="participant_left",
            id=f"EV_forged_{namespace}",
            created_at=int(time.time()),
            room=api.Room(name=room),
            participant=api.ParticipantInfo(
                identity=agent,
                kind=api.ParticipantInfo.Kind.AGENT,
                attributes={AGENT_NAME_ATTRIBUTE: f.agent_name},
                disconnect_reason=api.DisconnectReason.CONNECTION_TIMEOUT,
            ),
        )
        body = MessageToJson(forged).encode()
        token = (
            api.AccessToken(LIVEKIT_KEY, "not-the-secret-" + "x" * 20)
            .with_sha256(base64.b64encode(hashlib.sha256(body).digest()).decode())
            .to_jwt()
        )
        before = metric(operator, "voicefleet_webhook_requests_total", result="bad_signature")
        req = urllib.request.Request(
            stack.webhook_url, data=body, headers={"Authorization": token}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            await asyncio.to_thread(urllib.request.urlopen, req, timeout=5)
        assert e.value.code == 401
        after = metric(operator, "voicefleet_webhook_requests_total", result="bad_signature")
        assert after == before + 1

        async def unchanged() -> Any:
            agents, dispatches = await f.agents(room), await f.dispatches(room)
            return True if agents == [agent] and len(dispatches) == 1 else (agents, dispatches)

        await stays(unchanged, 5, "a forged webhook must not dispatch")


async def test_sweep_recovers_when_webhooks_are_off_and_the_operator_restarts(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    async with fleet(stack, kube, namespace, "swept") as f:
        room = f"swept-{namespace}"
        _, first = await f.call(room, "m")
        pod = await f.serving_pod(room)
        # The worker dies while the operator is down: no worker view saw it, and the
        # webhook LiveKit sends ~20 s later has nobody to go to. Only the sweep can tell.
        operator.stop()
        try:
            await f.control(pod, "crash")
            operator.extra_args = ["--webhook-port=0"]
            operator.start()

            async def new_agent() -> list[str]:
                return [a for a in await f.agents(room) if a != first]

            await until(new_agent, 90, "the sweep to bring a new agent")
            assert len(await f.dispatches(room)) == 2
            labels = {"namespace": namespace, "voiceagent": "swept"}
            assert (
                metric(
                    operator, "voicefleet_failover_orphans_found_total", source="sweep", **labels
                )
                == 1
            )
        finally:
            operator.stop()
            operator.extra_args = []
            operator.start()
        print(json.dumps({"dispatches": len(await f.dispatches(room))}))


async def test_a_second_voiceagent_with_the_agent_name_gets_no_call_and_dispatches_none(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """`owner` in two namespaces with one agent name on one LiveKit: the second waits
    (AgentNameConflict) and runs no worker, so a call can only reach the first's; when
    the first's agent dies mid-call, exactly one new dispatch is made (the second's
    failover stands down) and the new agent is the first fleet's again."""
    from kubernetes import client

    from .cluster import condition, get_va, wait_for

    other = f"{namespace}-b"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        async with fleet(stack, kube, namespace, "owner") as f:
            secrets(kube, other, stack.livekit_secret)
            spec = {
                "agentName": f.agent_name,
                "livekit": {"url": stack.livekit_url, "credentialsSecret": "livekit"},
                "model": {"apiKeySecret": {"name": "openai"}, "baseURL": OPENAI_BASE_URL},
                "sessions": {"drainTimeoutSeconds": 5},
                "autoscaling": {"mode": "none"},
                "replicas": 2,
                "template": {"image": MINI_IMAGE},
            }
            kube.create(voiceagent("owner", other, spec))
            c = await asyncio.to_thread(
                wait_for,
                lambda: (
                    condition(get_va(kube, other, "owner"), "Ready").get("reason")
                    == "AgentNameConflict"
                ),
                60,
                "AgentNameConflict on the second",
            )
            assert c
            room = f"call-{namespace}"
            _, first = await f.call(room, "m1")
            pod = await f.serving_pod(room)  # one of the first fleet's workers
            await until(lambda: f.seen_by_operator(pod, room), 10, "the operator to see it")
            await f.control(pod, "crash")

            async def new_agent() -> list[str]:
                return [a for a in await f.agents(room) if a != first]

            second = (await until(new_agent, 30, "a new agent in the room"))[0]
            assert (await f.serving_pod(room))["metadata"]["namespace"] == namespace

            async def one_agent_two_dispatches() -> Any:
                agents, dispatches = await f.agents(room), await f.dispatches(room)
                if agents == [second] and len(dispatches) == 2:
                    return True
                return (agents, dispatches)

            await stays(one_agent_two_dispatches, 8, "one new dispatch, one new agent")
            assert kube.core.list_namespaced_pod(other).items == []
            labels = {"namespace": other, "voiceagent": "owner"}
            assert metric(operator, "voicefleet_failovers_total", **labels) == 0
            assert metric(operator, "voicefleet_failover_orphans_found_total", **labels) == 0
            assert (
                metric(
                    operator, "voicefleet_failovers_total", namespace=namespace,
                    voiceagent="owner", outcome="redispatched",
                )
                == 1
            )  # fmt: skip
    finally:
        kube.core.delete_namespace(other)
