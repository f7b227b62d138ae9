"""Issue 13's HA fault, with live calls: two operator replicas under kopf peering, the
active one SIGKILLed together with the worker serving the most calls, and not restarted.
The standby takes over once the leader's peering record expires (60 s) and recovers those
calls (exactly one new agent each, never two at once); the other worker's calls go on.

The replicas are processes here, named in the KopfPeering by POD_ID as the chart's pods
are. LiveKit posts its webhooks to one fixed port, which the first replica holds; the
second listens for none, so after the handover the sweep finds the calls (in a cluster the
chart's webhook Service follows the active replica). This module runs its own operators,
not the module-scoped `operator` fixture, and they watch only its namespace.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from kubernetes import client

from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from ..operator.cluster import OperatorProcess, install_crd, install_images, install_rbac
from .chaos import Chaos
from .failover_scenario import WorkerFleet, until

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow]
PEERING = "voicefleet"


@dataclass
class Ha:
    kube: Kube
    ns: str
    operators: dict[str, OperatorProcess]  # POD_ID -> replica
    chaos: Chaos

    def active(self) -> str | None:
        """The replica kopf lets act: the highest priority in the KopfPeering."""
        obj = self.kube.get("kopf.dev/v1", "KopfPeering", PEERING, self.ns) or {}
        peers = {k: v for k, v in (obj.get("status") or {}).items() if k in self.operators}
        if len(peers) < len(self.operators):
            return None
        return str(max(peers, key=lambda k: peers[k]["priority"]))


@pytest.fixture(scope="module")
async def ha(
    stack: Stack, kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ha]:
    install_crd(kube)
    install_crd(kube, "kopf-peering.yaml")
    install_images(stack)
    ns = f"chaos-ha-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    kube.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                 "metadata": {"name": PEERING, "namespace": ns}})  # fmt: skip
    token = install_rbac(kube)
    operators: dict[str, OperatorProcess] = {}
    for pod_id, webhooks in (("replica-a", []), ("replica-b", ["--webhook-port=0"])):
        op = OperatorProcess(
            stack,
            token,
            tmp_path_factory.mktemp(pod_id),
            [f"--peering={PEERING}", f"--namespaces={ns}", *webhooks],
        )
        op.env["POD_ID"] = pod_id
        op.start()
        operators[pod_id] = op
    fleet = WorkerFleet(stack, kube, ns, "chaos-ha")
    h = Ha(kube, ns, operators, Chaos(stack, fleet, operators["replica-a"]))
    try:
        await until(lambda: asyncio.to_thread(h.active), 60, "both replicas in the peering")
        await fleet.start(replicas=2)
        yield h
    finally:
        await fleet.close()
        for pod_id, op in operators.items():
            op.stop()
            print(f"{pod_id} log tail:\n{op.tail()}")
        kube.core.delete_namespace(ns)


async def test_the_leader_killed_with_a_worker_the_standby_recovers_every_call(ha: Ha) -> None:
    leader = ha.active()
    assert leader is not None
    ha.chaos.op = ha.operators[leader]
    r = await ha.chaos.round("leader-kill", calls=3)
    print(f"\nleader-kill ({leader}): victim {r.victim_pod}; {r.calls}")
    assert r.victims, r
    assert all(c.max_agents <= 1 for c in r.calls), r
    assert all(c.ok for c in r.victims), r
    assert all(c.ok for c in r.bystanders), r
    # The standby took over: the new agents came from its failover, after the leader's
    # peering record ran out.
    (standby,) = [k for k in ha.operators if k != leader]
    log = ha.operators[standby].log.read_text(errors="replace")
    assert "orphaned" in log, ha.operators[standby].tail(80)
