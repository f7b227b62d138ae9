"""A VoiceAgent's workers as containers on the real node (kubelet + containerd), from the
worker image `make images` built, in a namespace enforcing Pod Security `restricted`. They
reach LiveKit and the Realtime stand-in (the one double) the way they would in a cluster:
by Service DNS names, resolved by CoreDNS and routed by kube-proxy over the pod network,
never 127.0.0.1. A caller on the host talks to them over WebRTC, turn after turn; a
worker container killed by the runtime mid-call is failed over once; a worker pod deleted
mid-call drains (SIGTERM to the container's PID 1 from the kubelet) and keeps its call.

The session's LiveKit listens on loopback only (every other test's calls stay there), so
this module runs a second livekit-server whose node IP is the pod bridge's gateway address,
reachable from the host and from the pods alike, and relays the stand-in's port onto that
address. Selector-less Services name both, as a user's cluster would name its LiveKit.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from tests.operator.cluster import OperatorProcess
from voicefleet_testbed.binaries import Binaries
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.images import BuiltImage, built
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.livekit_config import MediaAddress, livekit_config
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.procs import ProcRef, spawn, stop, wait_for
from voicefleet_testbed.realnode import RealNode
from voicefleet_testbed.realnode.config import host_service
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

from .chaos import process_tree, signal_all
from .failover_scenario import operator_metric
from .fleet import (
    JSON,
    LEAVE,
    SCALE,
    WORKER_START_S,
    Fleet,
    Shape,
    drop_reason,
    hang_up,
    read_sessions,
    rollout_under_calls,
    scale_up_then_down,
    turns,
    until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.images, pytest.mark.slow]

LIVEKIT_PORT = 7880  # the Services' ports, as a user's cluster would have them
REALTIME_PORT = 7879
ONE = Shape(max_per_worker=2, min_replicas=1, max_replicas=1, buffer_sessions=0, window_s=60)


@dataclass(frozen=True)
class PodNetServices:
    namespace: str  # where the Services live
    livekit_host_url: str  # for callers on the host
    livekit_port: int
    realtime_port: int

    @property
    def livekit_url(self) -> str:
        return f"ws://livekit.{self.namespace}.svc.cluster.local:{LIVEKIT_PORT}"

    def openai_base_url(self, scenario: str) -> str:
        return f"http://realtime.{self.namespace}.svc.cluster.local:{REALTIME_PORT}/s/{scenario}/v1"


def _listening(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


@pytest.fixture
def restricted_namespace(kube: Kube, real_namespace: str) -> str:
    """The real node's namespace, enforcing Pod Security `restricted` as a user's would."""
    kube.core.patch_namespace(
        real_namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    return real_namespace


@pytest.fixture
def pod_net_services(stack: Stack, kube: Kube, real_node: RealNode) -> Iterator[PodNetServices]:
    gateway = real_node.net.gateway
    procs: list[ProcRef] = []
    ns = f"pod-net-services-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        lk_port = free_port(gateway)
        config = stack.dir / "livekit-pod-net.yaml"
        config.write_text(
            json.dumps(
                livekit_config(
                    port=lk_port,
                    udp_port=free_port(gateway),
                    keys={LIVEKIT_KEY: stack.livekit_secret},
                    # No webhooks: the operator under test runs on the host, where the
                    # Service name in the VoiceAgent does not resolve, so its failover could
                    # not act on them (it would in a cluster, from its pod).
                    webhook_api_key=LIVEKIT_KEY,
                    webhook_urls=[],
                    # The gateway only: both sides reach it, and its candidates name one
                    # socket (with loopback too, two sockets would share the node IP and a
                    # pod's ICE checks would be answered from 127.0.0.1: never).
                    addresses=(MediaAddress(real_node.net.bridge, gateway),),
                )
            )
        )
        config.chmod(0o600)
        logs = stack.dir / "logs"
        procs.append(
            spawn(
                "livekit-pod-net",
                [str(Binaries.locate().livekit_server), f"--config={config}"],
                logs / "livekit-pod-net.log",
            )
        )
        rt_port = free_port(gateway)
        standin = int(stack.realtime_url.rsplit(":", 1)[1])
        relay = [sys.executable, "-m", "voicefleet_testbed.realnode.apiproxy",
                 f"--listen={gateway}:{rt_port}", f"--to=127.0.0.1:{standin}"]  # fmt: skip
        procs.append(spawn("realtime-pod-net-relay", relay, logs / "realtime-pod-net-relay.log"))
        wait_for(lambda: _listening(gateway, lk_port), 30, "LiveKit on the pod bridge")
        wait_for(lambda: _listening(gateway, rt_port), 30, "the stand-in's relay on the bridge")
        for obj in [
            *host_service(ns, "livekit", LIVEKIT_PORT, gateway, lk_port),
            *host_service(ns, "realtime", REALTIME_PORT, gateway, rt_port),
        ]:
            kube.create(obj)
        yield PodNetServices(ns, f"ws://{gateway}:{lk_port}", lk_port, rt_port)
    finally:
        for p in procs:
            stop(p)
        kube.core.delete_namespace(ns)


@pytest.fixture
def worker_image(real_node: RealNode) -> BuiltImage:
    image = built()["worker"]
    if not real_node.has_image(image.ref):
        real_node.import_image(Path(image.archive))
    return image


class PodNetFleet(Fleet):
    """A Fleet whose workers run the built worker image on the real node and name LiveKit
    and the model by Service DNS names; its callers join from the host. `by_address`: the
    VoiceAgent names LiveKit by the bridge address instead, which the operator on the host
    reaches too (its failover calls LiveKit's API; in a cluster it runs in a pod)."""

    def __init__(
        self,
        stack: Stack,
        kube: Kube,
        namespace: str,
        services: PodNetServices,
        image: str,
        by_address: bool = False,
    ) -> None:
        super().__init__(stack, kube, namespace)
        self.services = services
        self.image = image
        self.by_address = by_address

    def spec(self, shape: Shape, instructions: str = "You are a test agent.") -> JSON:
        spec = super().spec(shape, instructions)
        s = self.services
        spec["livekit"]["url"] = s.livekit_host_url if self.by_address else s.livekit_url
        spec["model"]["baseURL"] = self.services.openai_base_url(self.agent_name)
        spec["template"]["image"] = self.image
        return spec

    def caller(self) -> Caller:
        c = super().caller()
        c.url = self.services.livekit_host_url
        return c


@pytest.fixture
def new_fleet(
    operator: OperatorProcess,
    stack: Stack,
    kube: Kube,
    restricted_namespace: str,
    pod_net_services: PodNetServices,
    worker_image: BuiltImage,
) -> Callable[..., PodNetFleet]:
    """A VoiceAgent of built-image workers on the real node, under the operator under test
    (`new_fleet(by_address=True)` names LiveKit by the bridge address)."""

    def make(by_address: bool = False) -> PodNetFleet:
        return PodNetFleet(
            stack,
            kube,
            restricted_namespace,
            pod_net_services,
            worker_image.ref,
            by_address=by_address,
        )

    return make


async def test_a_call_to_workers_on_the_real_node_is_answered_turn_after_turn(
    kube: Kube,
    real_node: RealNode,
    worker_image: BuiltImage,
    new_fleet: Callable[..., PodNetFleet],
) -> None:
    fleet = new_fleet()
    ns = fleet.namespace
    await fleet.create(ONE)

    def ready_pod() -> JSON | None:
        pods = fleet.pods()
        return pods[0] if len(pods) == 1 and fleet.settled(1) else None

    pod = await until(ready_pod, WORKER_START_S, "the worker container Ready on the real node")
    assert pod["spec"]["nodeName"] == real_node.name
    (status,) = pod["status"]["containerStatuses"]
    assert status["imageID"].endswith(worker_image.image_id.split(":", 1)[1]), status
    assert pod["status"]["podIP"].startswith(real_node.net.gateway.rsplit(".", 1)[0] + ".")

    caller = await fleet.join(fleet.caller())
    try:
        # `kubectl logs` through the kubelet: what the worker said, shown on a failure.
        logs = kube.core.read_namespaced_pod_log(pod["metadata"]["name"], ns, tail_lines=40)
        assert not caller.report.errors, (caller.report.errors, logs)
        heard = []
        for _ in range(3):
            heard += await turns([caller])
        assert all(x is not None for x in heard), (heard, drop_reason(caller))
    finally:
        await hang_up([caller])
    assert drop_reason(caller) is None, drop_reason(caller)


TWO = Shape(max_per_worker=2, min_replicas=2, max_replicas=2, buffer_sessions=0, window_s=60)


def _container_of(real_node: RealNode, pod: str) -> str:
    """The running worker container of `pod`, as the runtime names it."""
    r = real_node.crictl("ps", "--name", "agent", "--label", f"io.kubernetes.pod.name={pod}", "-q")
    ids = r.stdout.split()
    assert r.returncode == 0 and len(ids) == 1, (r.stdout, r.stderr)
    return ids[0]


@pytest.mark.parametrize("how", ["container-kill", "force-delete"])
async def test_a_worker_gone_mid_call_is_failed_over_once(
    operator: OperatorProcess,
    kube: Kube,
    real_node: RealNode,
    new_fleet: Callable[..., PodNetFleet],
    how: str,
) -> None:
    """The runtime kills the worker container serving a call (what an OOM kill or `crictl
    stop` does; the kubelet restarts it on the same pod IP), or the pod is force-deleted
    (`kubectl delete --force --grace-period 0`: the kubelet kills the container, the
    ReplicaSet makes a new pod). The call gets exactly one new agent and is answered again."""
    fleet = new_fleet(by_address=True)
    ns = fleet.namespace
    await fleet.create(TWO)
    await until(lambda: fleet.settled(2), WORKER_START_S, "two worker containers Ready")
    caller = await fleet.join(fleet.caller())
    try:
        assert not caller.report.errors, caller.report.errors
        assert (await turns([caller]))[0] is not None, drop_reason(caller)
        place = await until(
            lambda: fleet.placement().get(caller.room_name), 10, "the call on a worker"
        )
        first = set(caller.agents)
        if how == "container-kill":
            container = _container_of(real_node, place[0])
            stopped = real_node.crictl("stop", "--timeout", "0", container)  # SIGKILL
            assert stopped.returncode == 0, stopped.stderr
        else:
            kube.core.delete_namespaced_pod(place[0], ns, grace_period_seconds=0)

        await until(lambda: bool(caller.agents - first) or None, 30, "a new agent in the room")
        assert (await turns([caller]))[0] is not None, drop_reason(caller)
        pod = kube.get("v1", "Pod", place[0], ns)
        if how == "container-kill":  # the kubelet restarted it: same pod, restartCount 1
            assert pod is not None
            (status,) = pod["status"]["containerStatuses"]
            assert status["restartCount"] >= 1, status
        else:
            assert pod is None, "the force-deleted pod is still there"
        # The call got exactly one new agent: once the dead one is out of the room
        # (removed by the operator, or timed out by LiveKit), one agent remains.
        gone = await caller.changes.wait_for(lambda: len(caller.agents) == 1, 45)
        assert gone, caller.agents
        assert caller.report.agent_joins == 2, caller.report
        assert caller.report.max_agents == 1, caller.report
        assert not caller.agents & first, (caller.agents, first)
        # The operator took it for one loss, of the worker's process (its restartCount
        # rose, or its address refused) or of its pod, not LiveKit's timeout of the dead
        # agent.
        labels = {"namespace": ns, "voiceagent": fleet.name}
        sources = {
            src: operator_metric(
                operator, "voicefleet_failover_orphans_found_total", source=src, **labels
            )
            for src in ("worker", "pod", "webhook", "sweep", "hung")
        }
        assert sum(sources.values()) == 1, sources
        # A force-deleted pod's container dies before its object goes: either is first.
        expected = ("worker",) if how == "container-kill" else ("worker", "pod")
        assert sum(sources[s] for s in expected) == 1, sources
        latency = operator_metric(operator, "voicefleet_failover_latency_seconds_sum", **labels)
        print(f"\n{how} -> new agent in the room: {latency:.2f}s (operator)")
    finally:
        await hang_up([caller])


def _container_pids(real_node: RealNode, container: str) -> list[int]:
    """Every process of a running container (its PID 1 and what it started), host PIDs."""
    r = real_node.crictl("inspect", container)
    assert r.returncode == 0, r.stderr
    return process_tree(int(json.loads(r.stdout)["info"]["pid"]))


async def test_a_hung_worker_on_the_real_node_is_ended_and_its_call_failed_over_once(
    operator: OperatorProcess,
    kube: Kube,
    real_node: RealNode,
    new_fleet: Callable[..., PodNetFleet],
) -> None:
    """Every process of the worker container serving a call is stopped (SIGSTOP: a
    deadlock, a frozen process). The real kubelet's readiness probe fails, the operator's
    own read gets no answer: the worker hangs. Its agent is removed from the room, the call
    gets exactly one new agent, and the hung pod is deleted (the kubelet's SIGKILL ends a
    stopped process)."""
    fleet = new_fleet(by_address=True)
    ns = fleet.namespace
    await fleet.create(TWO)
    await until(lambda: fleet.settled(2), WORKER_START_S, "two worker containers Ready")
    caller = await fleet.join(fleet.caller())
    stopped: list[int] = []
    try:
        assert (await turns([caller]))[0] is not None, drop_reason(caller)
        place = await until(
            lambda: fleet.placement().get(caller.room_name), 10, "the call on a worker"
        )
        first = set(caller.agents)
        stopped = _container_pids(real_node, _container_of(real_node, place[0]))
        signal_all(stopped, signal.SIGSTOP)
        t0 = time.monotonic()
        await until(lambda: bool(caller.agents - first) or None, 30, "a new agent in the room")
        new_agent_s = time.monotonic() - t0
        assert (await turns([caller]))[0] is not None, drop_reason(caller)
        # The hung agent was removed before the new one came: never two at once.
        assert caller.report.max_agents == 1, caller.report
        assert caller.report.agent_joins == 2, caller.report
        assert not caller.agents & first, (caller.agents, first)
        await until(lambda: kube.get("v1", "Pod", place[0], ns) is None, 30, "the hung pod deleted")
        labels = {"namespace": ns, "voiceagent": fleet.name}
        sources = {
            src: operator_metric(
                operator, "voicefleet_failover_orphans_found_total", source=src, **labels
            )
            for src in ("worker", "pod", "webhook", "sweep", "hung")
        }
        assert sources["hung"] == 1 and sum(sources.values()) == 1, sources
        print(f"\nsigstop -> new agent in the room: {new_agent_s:.2f}s (caller)")
    finally:
        signal_all(stopped, signal.SIGKILL)  # whatever the kubelet has not ended yet
        await hang_up([caller])


async def test_a_worker_pod_deleted_mid_call_drains_it_on_the_real_node(
    kube: Kube,
    new_fleet: Callable[..., PodNetFleet],
) -> None:
    """`kubectl delete pod` on the worker serving a call: the kubelet sends SIGTERM to the
    container's PID 1 and waits out the grace period the operator set; the worker drains,
    keeps the call (answered after the delete, same agent) and exits once it ends."""
    fleet = new_fleet()
    ns = fleet.namespace
    await fleet.create(ONE)
    await until(lambda: fleet.settled(1), WORKER_START_S, "the worker container Ready")
    caller = await fleet.join(fleet.caller())
    try:
        assert not caller.report.errors, caller.report.errors
        assert (await turns([caller]))[0] is not None, drop_reason(caller)
        (pod,) = fleet.pods()
        name = pod["metadata"]["name"]
        agent = set(caller.agents)
        kube.core.delete_namespaced_pod(name, ns)

        def draining() -> bool:
            got = kube.get("v1", "Pod", name, ns)
            report = read_sessions(got, kube) if got else None
            return bool(report and report.draining and report.activeSessions == 1)

        await until(draining, 30, "the worker draining with the call")
        heard = await turns([caller])
        assert heard[0] is not None, drop_reason(caller)
        assert caller.agents == agent and caller.report.agent_joins == 1, caller.report
    finally:
        await hang_up([caller])
    # The call over, the drained worker exits and its pod goes (long before the grace).
    await until(lambda: kube.get("v1", "Pod", name, ns) is None, 60, "the drained pod to go")
    assert drop_reason(caller) is None, drop_reason(caller)


ROLL = Shape(max_per_worker=2, min_replicas=1, max_replicas=3, buffer_sessions=1, window_s=60)
ROLL_CALLS = 3


async def test_a_rollout_on_the_real_node_drops_no_call(
    new_fleet: Callable[..., PodNetFleet],
) -> None:
    """A new `spec.model.instructions` rolls every worker container under live calls
    (maxUnavailable 0): the kubelet sends each old container SIGTERM and waits out the
    grace period; its calls stay with their agents and are answered after the rollout,
    a new call goes to a new container, and the old pods go once their calls end."""
    fleet = new_fleet()
    await fleet.create(ROLL)
    run = await rollout_under_calls(fleet, ROLL, n=ROLL_CALLS)
    assert run.workers >= ROLL.needed(ROLL_CALLS) == 2, run
    assert run.calls == ROLL_CALLS
    run.check_dropped_none()
    print(f"\n{run}")


async def test_scale_up_then_down_on_the_real_node_drops_no_call(
    new_fleet: Callable[..., PodNetFleet],
) -> None:
    """Callers arrive one by one and the autoscaler adds worker containers to cover them
    plus the buffer; then they leave and it removes workers one step at a time, one with a
    live call (6 -> 3 callers, one on each busy worker): the kubelet sends SIGTERM, the
    worker drains and keeps its call."""
    fleet = new_fleet()
    await fleet.create(SCALE)
    run = await scale_up_then_down(fleet, SCALE, n=6, leave=LEAVE)
    path = run.replica_path
    assert run.peak_replicas >= SCALE.needed(6) == 4, path
    assert path[0] == SCALE.min_replicas and path[-1] == SCALE.min_replicas, path
    assert run.unanswered == 0, run
    assert run.drops == {}, run.drops
    assert all(s.answered == s.callers for s in run.steps), run.steps
    assert run.calls_on_draining_workers >= 1, run.steps
    print(f"\n{run}")
