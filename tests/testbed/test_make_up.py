"""`make up` as a user meets it: a stack of its own with the real node (the machine's one,
taken from the session's stack for the while), the operator installed by the project's
packaged chart from the images `make images` built, on the real node, under Pod Security
`restricted`; examples/voiceagent.yaml applied unchanged becomes workers on the real node
that reach LiveKit and the Realtime stand-in (the one double) through their Services, and
a caller is answered turn after turn, by the Python caller and in headless Chromium through
the chart's call page. LiveKit's webhooks reach the operator pod. `make up`
again upgrades in place; `make down` leaves no process and no node state behind."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.failover_scenario import samples
from tests.testbed.test_lifecycle import processes_under
from voicefleet_contract import METRICS_PORT
from voicefleet_contract import metrics as m
from voicefleet_testbed import user_install
from voicefleet_testbed.binaries import REPO_DIR
from voicefleet_testbed.browser import BrowserCaller
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.cli import main as cli
from voicefleet_testbed.images import built
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.procs import wait_for
from voicefleet_testbed.realnode.node import lock_holder
from voicefleet_testbed.stack import LIVEKIT_KEY, OPERATOR, Stack

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.images, pytest.mark.slow]
JSON = dict[str, Any]
EXAMPLE = REPO_DIR / "examples" / "voiceagent.yaml"
CALL_PAGE_SELECTOR = (
    f"app.kubernetes.io/instance={user_install.RELEASE},app.kubernetes.io/name=voicefleet-callpage"
)


@pytest.fixture
def free_real_node(stack: Stack) -> None:
    """The machine has one real node: the session's stack gives its own up (a later test
    that asks for it starts it again)."""
    assert stack.stop_real_node() == []
    holder = lock_holder()
    if holder is not None:
        pytest.fail(f"the real node is held by the testbed in {holder}: stop it (make down)")


def _image_id(pod: JSON) -> str:
    (status,) = pod["status"]["containerStatuses"]
    return str(status["imageID"]).rsplit("@", 1)[-1]


async def _call(stack: Stack, agent: str) -> list[float | None]:
    caller = Caller(stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret,
                    room="make-up-call", agent_name=agent, identity="make-up-caller")  # fmt: skip
    try:
        await caller.connect()
        assert await caller.wait_agent(30), "no agent joined the call within 30 s"
        return [(await caller.turn(1.0, timeout=15)).latency_s for _ in range(2)]
    finally:
        await caller.close()


def _metrics(ip: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=3) as r:
        return str(r.read().decode())


def test_make_up_runs_the_example_on_the_real_node_as_a_user_would(
    free_real_node: None, tmp_path: Path
) -> None:
    d = tmp_path / "tb"
    try:
        assert cli(["--dir", str(d), "up"]) == 0
        stack = Stack(d)
        assert stack.state.chart and OPERATOR not in stack.state.procs
        node = stack.real_node
        assert node is not None
        kube = Kube.admin(stack)
        images = built()

        # kubectl get nodes: a Ready containerd node with kubelet v1.36 beside the hollow one.
        got = kube.get("v1", "Node", node.name)
        assert got is not None
        info = got["status"]["nodeInfo"]
        assert info["containerRuntimeVersion"].startswith("containerd://2.")
        assert info["kubeletVersion"].startswith("v1.36.")
        assert kube.node_ready(node.name)

        # The operator: the chart's pod on the real node, from the built image, as the
        # chart's ServiceAccount (least privilege: it may not even list namespaces).
        op = user_install.operator_pod(kube)
        assert op is not None and op["spec"]["nodeName"] == node.name
        assert _image_id(op) == images["operator"].image_id
        sa = op["spec"]["serviceAccountName"]
        assert sa == user_install.RELEASE
        token = kube.mint_token(user_install.NAMESPACE, sa, seconds=600)
        with pytest.raises(client.ApiException) as denied:
            Kube.with_token(stack, token).core.list_namespace()
        assert denied.value.status == 403

        # Every namespace enforces Pod Security restricted: a pod that asks for nothing is
        # refused, naming the level.
        with pytest.raises(client.ApiException) as refused:
            kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}}, "default")  # fmt: skip
        message = json.loads(refused.value.body or "{}").get("message", "")
        assert refused.value.status == 403 and 'violates PodSecurity "restricted' in message

        # The example, unchanged.
        docs = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
        for doc in docs:
            kube.create(doc, namespace="default")
        (va,) = [doc for doc in docs if doc["kind"] == "VoiceAgent"]
        name = va["metadata"]["name"]
        sel = f"app.kubernetes.io/instance={name},app.kubernetes.io/name=voicefleet-worker"
        worker = wait_for(lambda: kube.ready_pod("default", sel), 180, "a Ready worker pod")
        assert worker["spec"]["nodeName"] == node.name
        assert _image_id(worker) == images["worker"].image_id
        assert worker["status"]["podIP"].startswith(node.net.subnet.exploded.rsplit(".", 2)[0])
        env = {e["name"]: e for e in worker["spec"]["containers"][0]["env"]}
        assert env["LIVEKIT_URL"]["value"] == user_install.livekit_service_url()
        ip = worker["status"]["podIP"]
        wait_for(
            lambda: samples(_metrics(ip, METRICS_PORT), m.WORKER_REGISTERED.name) == 1,
            60,
            "the worker registered with LiveKit through its Service",
        )

        # A call through LiveKit to the worker container, answered turn after turn.
        latencies = asyncio.run(_call(stack, va["spec"]["agentName"]))
        assert all(x is not None for x in latencies), latencies

        # The chart's call page, through kubectl port-forward as its NOTES say, in headless
        # Chromium whose microphone speaks a sentence: it lists the example, and the agent's
        # state, voice and words reach the page.
        page = wait_for(
            lambda: kube.ready_pod(user_install.NAMESPACE, CALL_PAGE_SELECTOR), 60, "the call page"
        )
        assert (
            page["spec"]["nodeName"] == node.name and _image_id(page) == images["operator"].image_id
        )
        with (
            user_install.call_page(stack, free_port()) as url,
            BrowserCaller(tmp_path / "browser") as browser,
        ):
            seen = browser.call(
                url,
                f"default/{name}",
                agent_turns=2,
                screenshot=tmp_path / "call-page.png",
            )
        assert not seen.error, seen
        assert len(seen.agent_transcript) >= 2, seen  # answered turn after turn
        assert seen.audio_max > 0.01, seen  # the agent's audio itself, not only a track
        assert {"listening", "speaking"} & set(seen.states), seen
        assert seen.room.startswith(f"call-{name}-"), seen

        # LiveKit's webhooks about that call reached the operator pod (the NodePort).
        op_ip = op["status"]["podIP"]
        (op_port,) = [p["containerPort"] for c in op["spec"]["containers"]
                      for p in c.get("ports") or [] if p["name"] == "metrics"]  # fmt: skip
        wait_for(
            lambda: (
                samples(_metrics(op_ip, op_port), m.WEBHOOK_REQUESTS.name, result="accepted") > 0
            ),
            30,
            "LiveKit's webhooks accepted by the operator",
        )

        # Prometheus scrapes the real node's pods (the node agent's target file lists them).
        def scraped(job: str) -> bool:
            q = urllib.parse.urlencode({"query": f'up{{job="{job}"}} == 1'})
            with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/query?{q}", timeout=3) as r:
                return bool(json.loads(r.read())["data"]["result"])

        wait_for(lambda: scraped("voicefleet-worker"), 30, "Prometheus scraping the worker")
        wait_for(lambda: scraped("voicefleet-operator"), 30, "Prometheus scraping the operator")

        # make up again: the chart is upgraded in place; nothing restarts.
        pids = {n: r.pid for n, r in Stack(d).state.procs.items()}
        assert cli(["--dir", str(d), "up"]) == 0
        assert {n: r.pid for n, r in Stack(d).state.procs.items()} == pids
        again = user_install.operator_pod(kube)
        assert again is not None and again["metadata"]["uid"] == op["metadata"]["uid"]
        assert cli(["--dir", str(d), "status"]) == 0
    finally:
        cli(["--dir", str(d), "down"])
    assert not any(Stack(d).running().values())
    assert processes_under(d) == []
    assert lock_holder() is None
