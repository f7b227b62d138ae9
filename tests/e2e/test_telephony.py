"""spec.telephony against a real livekit-server with Redis (its SIP API needs it).

The operator under test keeps a VoiceAgent's inbound trunk, dispatch rule and outbound
trunk on LiveKit: created, edited in place on a spec change, refused (naming the other
object) when someone else's trunk already takes the number, adopted when asked, deleted
with the VoiceAgent. Then the routing as LiveKit's SIP bridge would do it (the bridge is
not on the module proxy, so no media leg): a participant joins the room the rule names,
with the rule's room configuration, and the VoiceAgent's agent answers it.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from livekit import api as lkapi
from livekit.protocol import sip as lksip

from voicefleet_contract import API_VERSION, GROUP, KIND, PLURAL, VERSION
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.realtime import StandInClient
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack
from voicefleet_worker.dial import NoOutboundTrunk, dial, outbound_trunk_id

from ..operator.cluster import OperatorProcess, condition, get_va, secrets, voiceagent
from ..operator.test_e2e_calls import worker_metrics

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.multinode, pytest.mark.slow]
T = TypeVar("T")
PASSWORD = "sip-pw-" + uuid.uuid4().hex  # must never show in status or events
WORKER_IMAGE = "ghcr.io/voicefleet/worker:0.1.0"


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check()` (sync or async) until truthy, with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
        except Exception as e:  # a blip while waiting is not the failure
            last = e
        if last and not isinstance(last, Exception):
            return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.2)


def number() -> str:
    return "+1555" + "".join(random.choices("0123456789", k=7))


@pytest.fixture
def sip_stack(multinode_stack: Stack) -> Stack:
    """A LiveKit with Redis (its SIP API needs it): the multi-node stack's node 1. The
    operator and the workers are the session stack's; they reach it on loopback."""
    return multinode_stack


@pytest.fixture
async def lk(sip_stack: Stack) -> AsyncIterator[lkapi.LiveKitAPI]:
    client = lkapi.LiveKitAPI(sip_stack.livekit_url, LIVEKIT_KEY, sip_stack.livekit_secret)
    try:
        yield client
    finally:
        await client.aclose()


def telephony_spec(stack: Stack, agent: str, nums: list[str], **telephony: Any) -> dict[str, Any]:
    return {
        "agentName": agent,
        "livekit": {"url": stack.livekit_url, "credentialsSecret": "livekit"},
        "model": {"apiKeySecret": {"name": "openai"}, "instructions": "test"},
        "autoscaling": {"mode": "none"},
        "replicas": 0,
        "telephony": {"inbound": {"numbers": nums, "authSecret": {"name": "sip"}}, **telephony},
    }


def telephony_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return dict(((get_va(kube, namespace, name) or {}).get("status") or {}).get("telephony") or {})


async def listed(lk: lkapi.LiveKitAPI) -> tuple[list[Any], list[Any], list[Any]]:
    i = await lk.sip.list_inbound_trunk(lksip.ListSIPInboundTrunkRequest())
    o = await lk.sip.list_outbound_trunk(lksip.ListSIPOutboundTrunkRequest())
    r = await lk.sip.list_dispatch_rule(lksip.ListSIPDispatchRuleRequest())
    return list(i.items), list(o.items), list(r.items)


def patch_telephony(kube: Kube, namespace: str, name: str, telephony: dict[str, Any]) -> None:
    """A merge patch of spec.telephony, as `kubectl patch --type merge` sends it."""
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"telephony": telephony}}
    )


def sip_secret(kube: Kube, namespace: str) -> None:
    kube.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sip", "namespace": namespace},
         "stringData": {"username": "provider", "password": PASSWORD}},
    )  # fmt: skip


async def test_trunks_and_rule_follow_the_voiceagent_on_livekit(
    operator: OperatorProcess, sip_stack: Stack, kube: Kube, namespace: str, lk: lkapi.LiveKitAPI
) -> None:
    secrets(kube, namespace, sip_stack.livekit_secret)
    sip_secret(kube, namespace)
    name, agent, first = "line", f"tel-{uuid.uuid4().hex[:6]}", number()
    outbound = {"address": "sip.provider.example.com", "numbers": [first]}
    kube.create(voiceagent(name, namespace, telephony_spec(
        sip_stack, agent, [first], dispatch={"pin": "4321", "metadata": '{"line": "1"}'},
        outbound=outbound,
    )))  # fmt: skip

    st = await until(
        lambda: (s := telephony_status(kube, namespace, name)).get("state") == "Synced" and s,
        60, "status.telephony Synced",
    )  # fmt: skip
    # The condition follows (the status writer turns status.telephony into it).
    await until(
        lambda: condition(get_va(kube, namespace, name), "TelephonyReady").get("status") == "True",
        30, "TelephonyReady=True",
    )  # fmt: skip
    va = get_va(kube, namespace, name) or {}
    # A finalizer (kopf's) holds the VoiceAgent until LiveKit's objects are gone.
    assert va["metadata"].get("finalizers"), va["metadata"]
    # On LiveKit, listed through its API: the trunk with the number, the rule bound to it
    # dispatching this agent, the outbound trunk; named for the VoiceAgent.
    inbound, outs, rules = await listed(lk)
    (trunk,) = [t for t in inbound if t.sip_trunk_id == st["inboundTrunkId"]]
    assert list(trunk.numbers) == [first] and trunk.name == f"voicefleet/{namespace}/{name}"
    assert trunk.auth_username == "provider"
    (rule,) = [r for r in rules if r.sip_dispatch_rule_id == st["dispatchRuleId"]]
    assert list(rule.trunk_ids) == [trunk.sip_trunk_id]
    assert rule.rule.dispatch_rule_individual.pin == "4321"
    assert [(a.agent_name, a.metadata) for a in rule.room_config.agents] == [
        (agent, '{"line": "1"}')
    ]
    (out,) = [t for t in outs if t.sip_trunk_id == st["outboundTrunkId"]]
    assert out.address == "sip.provider.example.com"
    # A worker finds its outbound trunk by the same name (Job.dial).
    assert await outbound_trunk_id(lk, namespace, name) == out.sip_trunk_id
    with pytest.raises(NoOutboundTrunk):
        await outbound_trunk_id(lk, namespace, "nobody")
    # The call itself needs LiveKit's SIP bridge, which is not here: LiveKit says so.
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(lkapi.TwirpError) as no_bridge:
        await asyncio.wait_for(dial(lk, namespace, name, "dial-test", number()), 60)
    print(f"CreateSIPParticipant without a bridge: {no_bridge.value.code}: "
          f"{no_bridge.value.message} after {asyncio.get_running_loop().time() - t0:.1f}s")  # fmt: skip
    assert "trunk" not in no_bridge.value.message.lower(), no_bridge.value.message

    # A spec change: the same objects, edited in place.
    second = number()
    patch_telephony(kube, namespace, name, {"inbound": {"numbers": [first, second]},
                                            "dispatch": {"pin": "8765"}})  # fmt: skip

    async def edited() -> bool:
        inbound, _, rules = await listed(lk)
        t = [t for t in inbound if t.sip_trunk_id == st["inboundTrunkId"]]
        r = [r for r in rules if r.sip_dispatch_rule_id == st["dispatchRuleId"]]
        return bool(t and r and list(t[0].numbers) == [first, second]
                    and r[0].rule.dispatch_rule_individual.pin == "8765")  # fmt: skip

    await until(edited, 60, "the trunk and rule edited in place")
    assert telephony_status(kube, namespace, name)["inboundTrunkId"] == st["inboundTrunkId"]

    # No secret in status or events.
    events = kube.list("v1", "Event", namespace)
    assert PASSWORD not in json.dumps(get_va(kube, namespace, name)) + json.dumps(events)
    assert any(e.get("reason") == "TelephonySynced" for e in events)

    # Deleted with the VoiceAgent.
    kube.delete(API_VERSION, KIND, name, namespace)
    await until(lambda: get_va(kube, namespace, name) is None, 60, "the VoiceAgent gone")
    inbound, outs, rules = await listed(lk)
    ids = {t.sip_trunk_id for t in inbound + outs} | {r.sip_dispatch_rule_id for r in rules}
    assert not ids & {st["inboundTrunkId"], st["outboundTrunkId"], st["dispatchRuleId"]}


async def test_someone_elses_trunk_is_refused_by_name_then_adopted(
    operator: OperatorProcess, sip_stack: Stack, kube: Kube, namespace: str, lk: lkapi.LiveKitAPI
) -> None:
    secrets(kube, namespace, sip_stack.livekit_secret)
    sip_secret(kube, namespace)
    taken = number()
    theirs = await lk.sip.create_inbound_trunk(
        lksip.CreateSIPInboundTrunkRequest(
            trunk=lksip.SIPInboundTrunkInfo(name="pbx", numbers=[taken])
        )
    )
    name = "clash"
    kube.create(voiceagent(name, namespace, telephony_spec(sip_stack, "clash-agent", [taken])))
    c = await until(
        lambda: (c := condition(get_va(kube, namespace, name), "TelephonyReady")).get("reason")
        == "Conflict" and c,
        60, "TelephonyReady=False, Conflict",
    )  # fmt: skip
    assert c["status"] == "False"
    assert theirs.sip_trunk_id in c["message"] and "'pbx'" in c["message"] and taken in c["message"]
    _, _, rules = await listed(lk)
    assert not [r for r in rules if f"voicefleet/{namespace}/{name}" == r.name]  # nothing made

    patch_telephony(kube, namespace, name, {"adopt": True})
    st = await until(
        lambda: (s := telephony_status(kube, namespace, name)).get("state") == "Synced" and s,
        60, "the trunk adopted",
    )  # fmt: skip
    assert st["inboundTrunkId"] == theirs.sip_trunk_id
    inbound, _, _ = await listed(lk)
    (t,) = [t for t in inbound if t.sip_trunk_id == theirs.sip_trunk_id]
    assert t.name == f"voicefleet/{namespace}/{name}"


async def test_a_caller_in_the_rooms_the_rule_names_reaches_the_agent(
    operator: OperatorProcess, sip_stack: Stack, kube: Kube, namespace: str, lk: lkapi.LiveKitAPI
) -> None:
    """As the SIP bridge would: the call's room from the rule, the rule's room config (which
    dispatches the agent by name), the rule's attributes on the caller; one real worker."""
    secrets(kube, namespace, sip_stack.livekit_secret)
    sip_secret(kube, namespace)
    agent, caller_number = f"tel-call-{uuid.uuid4().hex[:6]}", number()
    standin = StandInClient(sip_stack.realtime_url, scenario=agent)
    await standin.configure(modelDelayMs=100, responseMs=800)
    spec = telephony_spec(
        sip_stack, agent, [number()],
        dispatch={"roomPrefix": "phone", "attributes": {"line": "support"}},
    )  # fmt: skip
    spec["model"]["baseURL"] = standin.base_url
    spec["model"]["turnDetection"] = {"type": "server_vad", "silenceDurationMs": 300}
    spec.update(replicas=1, template={"image": WORKER_IMAGE})
    kube.create(voiceagent("phone", namespace, spec))
    st = await until(
        lambda: (s := telephony_status(kube, namespace, "phone")).get("state") == "Synced" and s,
        60, "the rule on LiveKit",
    )  # fmt: skip
    await until(
        lambda: condition(get_va(kube, namespace, "phone"), "Ready").get("status") == "True",
        150, "a real worker Ready",
    )  # fmt: skip
    _, _, rules = await listed(lk)
    (rule,) = [r for r in rules if r.sip_dispatch_rule_id == st["dispatchRuleId"]]
    (dispatch,) = rule.room_config.agents
    room = (
        f"{rule.rule.dispatch_rule_individual.room_prefix}_{caller_number}_{uuid.uuid4().hex[:4]}"
    )
    caller = Caller(
        sip_stack.livekit_url, LIVEKIT_KEY, sip_stack.livekit_secret, room=room,
        agent_name=dispatch.agent_name, metadata=dispatch.metadata,
        identity=f"sip_{caller_number}", kind="sip",
    )  # fmt: skip
    try:
        await caller.connect()
        assert await caller.wait_agent(60), "the rule's dispatch brought no agent"
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the agent did not answer"
    finally:
        await caller.close()
    assert room.startswith("phone_") and dict(rule.attributes) == {"line": "support"}
    # The worker counts the session as a phone call (the caller's participant kind).
    (pod,) = kube.list("v1", "Pod", namespace, "app.kubernetes.io/instance=phone")
    got = worker_metrics(pod["status"]["podIP"])
    assert got.get('voicefleet_worker_callers_total{origin="sip"}') == 1, got
