"""The operator against the testbed's real API server and controllers (issue 3).

The operator runs as a process under its own ServiceAccount bound to operator/rbac's
ClusterRole, never as admin; its workers are the testbed's fake worker (voicefleet_testbed.fake_worker)
that loads the rendered agent.json with the contract's loader and serves the health port.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import yaml
from kubernetes import client

from voicefleet_contract import ANNOTATION_CONFIG_HASH, API_VERSION, GROUP, KIND, PLURAL, VERSION
from voicefleet_contract.capacity import DEFAULT_MAX_PER_WORKER
from voicefleet_operator.settings import Settings
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from .cluster import (
    CRASH_IMAGE,
    REPO,
    OperatorProcess,
    condition,
    get_va,
    secrets,
    table,
    voiceagent,
    wait_for,
)
from .util import LIVEKIT_URL, OPENAI_BASE_URL

pytestmark = pytest.mark.cluster
SELECTOR = "app.kubernetes.io/instance={},app.kubernetes.io/name=voicefleet-worker"


def spec(**extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "livekit": {"url": LIVEKIT_URL, "credentialsSecret": "livekit"},
        "model": {
            "apiKeySecret": {"name": "openai"},
            "baseURL": OPENAI_BASE_URL,
            "instructions": "You are a test agent.",
        },
        "sessions": {"drainTimeoutSeconds": 5},
        "autoscaling": {"mode": "none"},
        "replicas": 1,
    }
    s.update(extra)
    return s


def ready(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    va = get_va(kube, ns, name)
    gen = (va or {}).get("metadata", {}).get("generation")
    c = condition(va, "Ready")
    if c.get("status") == "True" and (va or {}).get("status", {}).get("observedGeneration") == gen:
        return va
    return None


def children(kube: Kube, ns: str, name: str) -> dict[str, dict[str, Any] | None]:
    return {
        "Deployment": kube.get("apps/v1", "Deployment", name, ns),
        "ConfigMap": kube.get("v1", "ConfigMap", f"{name}-config", ns),
        "Service": kube.get("v1", "Service", f"{name}-workers", ns),
        "PodDisruptionBudget": kube.get("policy/v1", "PodDisruptionBudget", name, ns),
    }


def events(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kube.list("v1", "Event", ns)
        if e["involvedObject"]["kind"] == KIND and e["involvedObject"]["name"] == name
    ]


def test_apply_creates_owned_children_and_becomes_ready(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    created = kube.create(voiceagent("support", namespace, spec()))
    va = wait_for(lambda: ready(kube, namespace, "support"), 90, "Ready")
    for kind, obj in children(kube, namespace, "support").items():
        assert obj is not None, kind
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": "support",
                "uid": created["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], kind
    st = va["status"]
    assert (
        st["readyReplicas"] == 1
        and st["workers"] == "1/1"
        and st["capacity"] == DEFAULT_MAX_PER_WORKER
    )
    assert st["selector"] == SELECTOR.format("support")
    assert st["agentName"] == "support"
    # `kubectl get va`: the printer columns.
    t = table(kube, namespace)
    cols = [c["name"] for c in t["columnDefinitions"]]
    assert cols[:4] == ["Name", "Agent", "Ready", "Sessions"] and "Age" in cols
    row = t["rows"][0]["cells"]
    assert row[:4] == ["support", "support", "1/1", f"0/{DEFAULT_MAX_PER_WORKER}"]
    assert any(e["reason"] == "Created" for e in events(kube, namespace, "support"))
    assert 'voiceagent="support"' in operator.metrics()


def test_the_example_becomes_ready_as_is(
    operator: OperatorProcess, stack: Stack, kube: Kube, namespace: str
) -> None:
    """examples/voiceagent.yaml, applied unchanged as a user would (`kubectl apply -n`),
    becomes Ready. Its LiveKit credentials are the testbed's own (devkey and the fixed dev
    secret) and it names LiveKit and the model by Service; here the workers run the fake
    worker (the operator's --default-image), which loads the rendered agent.json and dials
    neither (test_make_up.py runs it with the real worker on the real node)."""
    text = (REPO / "examples" / "voiceagent.yaml").read_text()
    docs = list(yaml.safe_load_all(text))
    for d in docs:
        kube.create(d, namespace=namespace)
    (va,) = [d for d in docs if d["kind"] == KIND]
    secret = next(
        d for d in docs if d["metadata"]["name"] == va["spec"]["livekit"]["credentialsSecret"]
    )
    assert secret["stringData"] == {"apiKey": "devkey", "apiSecret": stack.livekit_secret}
    name = va["metadata"]["name"]
    got = wait_for(lambda: ready(kube, namespace, name), 90, "the example Ready")
    assert got["status"]["agentName"] == va["spec"]["agentName"]
    assert got["status"]["readyReplicas"] >= va["spec"]["autoscaling"]["minReplicas"]
    dep = kube.get("apps/v1", "Deployment", name, namespace)
    assert dep is not None
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LIVEKIT_URL"]["value"] == va["spec"]["livekit"]["url"]
    assert (
        env["LIVEKIT_API_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    )
    # Its autoscaling mode is builtin: the autoscaler's daemon decides and reports.
    wait_for(
        lambda: (get_va(kube, namespace, name) or {}).get("status", {}).get("autoscaler", {}).get("mode") == "builtin",
        30,
        "the built-in autoscaler's status",
    )  # fmt: skip
    assert "Traceback" not in operator.tail(400), operator.tail(400)


def test_instructions_change_rolls_without_dropping_ready_workers(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("roll", namespace, spec(replicas=2)))
    wait_for(lambda: ready(kube, namespace, "roll"), 90, "Ready")
    dep = kube.get("apps/v1", "Deployment", "roll", namespace)
    assert dep is not None
    old_hash = dep["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
    old_pods = {
        p["metadata"]["name"] for p in kube.list("v1", "Pod", namespace, SELECTOR.format("roll"))
    }

    patched = spec(replicas=2)
    patched["model"]["instructions"] = "You are a changed test agent."
    kube.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "roll",
        {"spec": {"model": {"instructions": patched["model"]["instructions"]}}},
    )
    min_ready = 99
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = kube.list("v1", "Pod", namespace, SELECTOR.format("roll"))
        ready_pods = [
            p for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])
        ]  # fmt: skip
        min_ready = min(min_ready, len(ready_pods))
        names = {p["metadata"]["name"] for p in ready_pods}
        if len(ready_pods) == 2 and not names & old_pods and len(pods) == 2:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("rollout did not finish")
    assert min_ready >= 2, "a worker was taken away before its replacement was Ready"
    dep = kube.get("apps/v1", "Deployment", "roll", namespace)
    assert dep is not None
    new_hash = dep["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
    assert new_hash != old_hash
    va = wait_for(lambda: ready(kube, namespace, "roll"), 60, "Ready after rollout")
    assert va["status"]["configHash"] == new_hash
    cm = kube.get("v1", "ConfigMap", "roll-config", namespace)
    assert cm is not None and "changed test agent" in cm["data"]["agent.json"]


def test_drift_is_repaired(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    # The production resync (10 min): a repair within the 30 s windows below is the
    # children's watch, not the periodic resync the shared operator runs every 5 s.
    with operator.restarted_with(f"--resync-seconds={Settings().resync_seconds:g}"):
        _drift_is_repaired(kube, namespace)


def _drift_is_repaired(kube: Kube, namespace: str) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("drift", namespace, spec()))
    wait_for(lambda: ready(kube, namespace, "drift"), 90, "Ready")
    dep = kube.get("apps/v1", "Deployment", "drift", namespace)
    assert dep is not None
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]

    kube.apps.patch_namespaced_deployment(
        "drift", namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "evil:1"}]}}}},
    )  # fmt: skip
    wait_for(
        lambda: (
            (d := kube.get("apps/v1", "Deployment", "drift", namespace))
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == image
        ),
        30,
        "image reverted",
    )
    uid = dep["metadata"]["uid"]
    kube.delete("apps/v1", "Deployment", "drift", namespace)
    wait_for(
        lambda: (
            (d := kube.get("apps/v1", "Deployment", "drift", namespace))
            and d["metadata"]["uid"] != uid
        ),
        30,
        "Deployment recreated",
    )
    kube.delete("v1", "ConfigMap", "drift-config", namespace)
    wait_for(
        lambda: kube.get("v1", "ConfigMap", "drift-config", namespace), 30, "ConfigMap recreated"
    )
    wait_for(lambda: ready(kube, namespace, "drift"), 90, "Ready again")

    # kopf posts Events in the background: wait for them rather than read once.
    def reported() -> dict[str, list[str]] | None:
        by_reason: dict[str, list[str]] = {}
        for e in events(kube, namespace, "drift"):
            by_reason.setdefault(e["reason"], []).append(e["message"])
        return by_reason if {"DriftRepaired", "Recreated"} <= set(by_reason) else None

    by_reason = wait_for(reported, 30, "DriftRepaired and Recreated events")
    # The deleted Deployment and the deleted ConfigMap are each reported as re-created.
    recreated = " ".join(by_reason["Recreated"])
    assert "Deployment drift" in recreated and "ConfigMap drift-config" in recreated


def test_scale_subresource_in_mode_none(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("scaled", namespace, spec()))
    wait_for(lambda: ready(kube, namespace, "scaled"), 90, "Ready")
    # What `kubectl scale va/scaled --replicas=3` does.
    kube.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, "scaled", {"spec": {"replicas": 3}}
    )
    wait_for(
        lambda: (
            (d := kube.get("apps/v1", "Deployment", "scaled", namespace))
            and d["spec"]["replicas"] == 3
        ),
        30,
        "Deployment scaled",
    )
    va = wait_for(
        lambda: (v := ready(kube, namespace, "scaled")) and v["status"]["readyReplicas"] == 3 and v,
        90,
        "3 ready",
    )
    scale: Any = kube.custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, "scaled"
    )
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == va["status"]["selector"]


def test_hpa_mode_leaves_replicas_to_others(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    s = spec(autoscaling={"mode": "hpa", "minReplicas": 1, "maxReplicas": 4})
    kube.create(voiceagent("hpa", namespace, s))
    wait_for(lambda: ready(kube, namespace, "hpa"), 90, "Ready")
    # An autoscaler (or a human) scales the Deployment; the operator must not fight it.
    kube.apps.patch_namespaced_deployment_scale("hpa", namespace, {"spec": {"replicas": 2}})
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "hpa", {"spec": {"model": {"instructions": "v2"}}}
    )
    wait_for(lambda: ready(kube, namespace, "hpa"), 90, "Ready after change")
    # Two more reconciles, of which a quiet VoiceAgent's timer makes at least one a full
    # resync (every ~5 s here): the operator had its chance to fight the scale.
    operator.wait_reconciled(namespace, "hpa", more=2)
    dep = kube.get("apps/v1", "Deployment", "hpa", namespace)
    assert dep is not None and dep["spec"]["replicas"] == 2


def test_deleting_the_voiceagent_collects_children(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("gone", namespace, spec()))
    wait_for(lambda: ready(kube, namespace, "gone"), 90, "Ready")
    kube.delete(API_VERSION, KIND, "gone", namespace)
    wait_for(
        lambda: all(v is None for v in children(kube, namespace, "gone").values()),
        60,
        "children garbage-collected",
    )


def test_missing_secret_and_key_are_conditions_not_crashes(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    kube.create(voiceagent("nosecret", namespace, spec()))
    va = wait_for(
        lambda: (v := get_va(kube, namespace, "nosecret")) and condition(v, "Ready").get("reason") == "SecretNotFound" and v,
        30,
        "SecretNotFound",
    )  # fmt: skip
    assert "spec.livekit.credentialsSecret" in condition(va, "Ready")["message"]
    assert children(kube, namespace, "nosecret")["Deployment"] is None
    warnings = [e for e in events(kube, namespace, "nosecret") if e["type"] == "Warning"]
    assert warnings and warnings[0]["reason"] == "SecretNotFound"

    # A key missing: SecretKeyMissing. Then fixed: Ready, without any edit of the VoiceAgent.
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "livekit", "namespace": namespace}, "stringData": {"apiKey": "k"}})  # fmt: skip
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai", "namespace": namespace}, "stringData": {"apiKey": "k"}})  # fmt: skip
    va = wait_for(
        lambda: (v := get_va(kube, namespace, "nosecret")) and condition(v, "Ready").get("reason") == "SecretKeyMissing" and v,
        30,
        "SecretKeyMissing",
    )  # fmt: skip
    assert "apiSecret" in condition(va, "Ready")["message"]
    secrets(kube, namespace)
    wait_for(lambda: ready(kube, namespace, "nosecret"), 90, "Ready once the Secret is complete")

    # A running fleet whose Secret disappears keeps running, untouched.
    dep = kube.get("apps/v1", "Deployment", "nosecret", namespace)
    assert dep is not None
    kube.delete("v1", "Secret", "openai", namespace)
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "nosecret", {"spec": {"model": {"instructions": "v2"}}}
    )
    wait_for(
        lambda: (
            condition(get_va(kube, namespace, "nosecret"), "Ready").get("reason")
            == "SecretNotFound"
        ),
        30,
        "SecretNotFound after deletion",
    )
    after = kube.get("apps/v1", "Deployment", "nosecret", namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == dep["metadata"]["resourceVersion"] or (
        after["metadata"]["generation"] == dep["metadata"]["generation"]
    )
    assert operator.healthy()


def test_image_that_never_becomes_ready(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    # A healthy neighbour first: the broken VoiceAgent must not touch it or its workers.
    kube.create(voiceagent("steady", namespace, spec()))
    wait_for(lambda: ready(kube, namespace, "steady"), 90, "the neighbour Ready")
    steady_dep = kube.get("apps/v1", "Deployment", "steady", namespace)
    assert steady_dep is not None
    steady_pods = {
        p["metadata"]["uid"] for p in kube.list("v1", "Pod", namespace, SELECTOR.format("steady"))
    }
    kube.create(voiceagent("crash", namespace, spec(template={"image": CRASH_IMAGE})))
    va = wait_for(
        lambda: (v := get_va(kube, namespace, "crash")) and condition(v, "Degraded").get("status") == "True" and v,
        90,
        "Degraded",
    )  # fmt: skip
    assert condition(va, "Ready")["status"] == "False"
    assert (
        "CrashLoopBackOff" in condition(va, "Degraded")["message"]
        or "Error" in condition(va, "Degraded")["message"]
    )
    assert condition(va, "Degraded")["reason"] == "WorkersFailing"
    warnings = wait_for(
        lambda: [e for e in events(kube, namespace, "crash") if e["type"] == "Warning"],
        30,
        "a Warning Event",
    )
    assert warnings[0]["reason"] == "WorkersFailing" and "crash-" in warnings[0]["message"]
    # The neighbour and its workers are untouched; the operator runs on.
    after = kube.get("apps/v1", "Deployment", "steady", namespace)
    assert after is not None
    assert after["metadata"]["generation"] == steady_dep["metadata"]["generation"]
    pods = kube.list("v1", "Pod", namespace, SELECTOR.format("steady"))
    assert {p["metadata"]["uid"] for p in pods} == steady_pods
    assert all(cs["restartCount"] == 0 for p in pods for cs in p["status"]["containerStatuses"])
    assert ready(kube, namespace, "steady") is not None
    assert operator.healthy()


def test_operator_restart_churns_nothing(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("calm", namespace, spec()))
    wait_for(lambda: ready(kube, namespace, "calm"), 90, "Ready")
    time.sleep(2)  # let the last status write land

    def versions() -> dict[str, str]:
        objs: dict[str, Any] = dict(children(kube, namespace, "calm"))
        objs["VoiceAgent"] = get_va(kube, namespace, "calm")
        return {k: v["metadata"]["resourceVersion"] for k, v in objs.items()}

    before = versions()
    operator.stop()
    operator.start()
    # The restarted operator resumes every VoiceAgent, then resyncs every 5 s: two of its
    # reconciles of calm (the resume and a resync) have seen everything and changed nothing.
    wait_for(lambda: operator.reconciles(namespace, "calm") >= 2, 30, "resume and a resync")
    assert versions() == before


BAD: list[tuple[str, Any, str]] = [
    ("wrong type", lambda s: s["sessions"].update(maxPerWorker="ten"), "spec.sessions.maxPerWorker"),
    ("out of range", lambda s: s["sessions"].update(maxPerWorker=0), "spec.sessions.maxPerWorker"),
    ("min > max", lambda s: s.update(autoscaling={"minReplicas": 5, "maxReplicas": 2}), "spec.autoscaling.minReplicas"),
    ("unknown voice", lambda s: (s["model"].pop("baseURL"), s["model"].update(voice="marine")), "spec.model.voice"),
    ("voice of the wrong type", lambda s: s["model"].update(voice=5), "spec.model.voice"),
    ("voice of the wrong type (object)", lambda s: s["model"].update(voice={"type": "marin"}), "spec.model.voice"),
    ("malformed voice name", lambda s: s["model"].update(voice="no spaces"), "spec.model.voice"),
    ("replicas of the wrong type", lambda s: s.update(replicas="3"), "spec.replicas"),
    ("too many replicas", lambda s: s.update(replicas=100_000), "spec.replicas"),
    ("tools not a list", lambda s: s.update(tools={"name": "a"}), "spec.tools"),
    ("tool parameters not an object schema", lambda s: s.update(tools=[{**_tool("a"), "parameters": {"type": "string"}}]), "spec.tools[0].parameters.type"),
    ("utilization out of range", lambda s: s.update(autoscaling={"targetUtilization": 1.5}), "spec.autoscaling.targetUtilization"),
    ("absent livekit url", lambda s: s["livekit"].pop("url"), "spec.livekit.url"),
    ("absent credentials secret", lambda s: s["livekit"].pop("credentialsSecret"), "spec.livekit.credentialsSecret"),
    ("absent tool url", lambda s: s.update(tools=[{"name": "a", "description": "d"}]), "spec.tools[0].url"),
    ("malformed secret name", lambda s: s["livekit"].update(credentialsSecret="Not_A_Name"), "spec.livekit.credentialsSecret"),
    ("unknown field", lambda s: s.update(livekitt={"url": "ws://x"}), "spec.livekitt"),
    ("unknown turn detection type", lambda s: s["model"].update(turnDetection={"type": "loud"}), "spec.model.turnDetection.type"),
    ("duplicate tools", lambda s: s.update(tools=[_tool("a"), _tool("a")]), "spec.tools"),
    ("bad tool name", lambda s: s.update(tools=[_tool("1-a b")]), "spec.tools[0].name"),
    ("malformed livekit url", lambda s: s["livekit"].update(url="livekit:7880"), "spec.livekit.url"),
    ("malformed tool url", lambda s: s.update(tools=[{**_tool("a"), "url": "not a url"}]), "spec.tools[0].url"),
    ("malformed base url", lambda s: s["model"].update(baseURL="ftp://x"), "spec.model.baseURL"),
    ("absent livekit", lambda s: s.pop("livekit"), "spec.livekit"),
    ("absent api key secret", lambda s: s["model"].pop("apiKeySecret"), "spec.model.apiKeySecret"),
    ("absent model", lambda s: s.pop("model"), "spec.model"),
    ("agent module not a module path", lambda s: s.update(agent={"module": "my-agent.py"}), "spec.agent.module"),
    ("unknown job executor", lambda s: s.update(agent={"module": "a", "jobExecutor": "fork"}), "spec.agent.jobExecutor"),
    ("agent module through the env", lambda s: s.update(template={"env": [{"name": "VOICEFLEET_AGENT", "value": "a"}]}), "spec.template.env[0].name"),
    ("1 MB instructions", lambda s: s["model"].update(instructions="x" * 1_000_000), "spec.model.instructions"),
    ("literal secret env", lambda s: s.update(template={"env": [{"name": "OPENAI_API_KEY", "value": "sk-1"}]}), "spec.template.env[0].name"),
    ("overriding operator env", lambda s: s.update(template={"env": [{"name": "POD_IP", "value": "1"}]}), "spec.template.env[0].name"),
    ("selector label", lambda s: s.update(template={"labels": {"app.kubernetes.io/instance": "x"}}), "spec.template.labels"),
    ("eagerness with server_vad", lambda s: s["model"].update(turnDetection={"type": "server_vad", "eagerness": "low"}), "spec.model.turnDetection.eagerness"),
    ("hpa to zero", lambda s: s.update(autoscaling={"mode": "hpa", "minReplicas": 0}), "spec.autoscaling.minReplicas"),
    ("negative replicas", lambda s: s.update(replicas=-1), "spec.replicas"),
    ("unknown mode", lambda s: s.update(autoscaling={"mode": "cpu"}), "spec.autoscaling.mode"),
    ("temperature too hot", lambda s: s["model"].update(temperature=3), "spec.model.temperature"),
    ("metadata tool url", lambda s: s.update(tools=[{**_tool("a"), "url": "http://169.254.169.254/latest/meta-data/"}]), "spec.tools[0].url"),
    ("link-local ipv6 tool url", lambda s: s.update(tools=[{**_tool("a"), "url": "http://[fe80::1]:80/x"}]), "spec.tools[0].url"),
    ("metadata host tool url", lambda s: s.update(tools=[{**_tool("a"), "url": "http://Metadata.Google.Internal/x"}]), "spec.tools[0].url"),
    ("integer ip tool url", lambda s: s.update(tools=[{**_tool("a"), "url": "http://2852039166/x"}]), "spec.tools[0].url"),
    ("literal tool header", lambda s: s.update(tools=[{**_tool("a"), "headers": [{"name": "Authorization", "value": "Bearer x"}]}]), "spec.tools[0].headers[0]"),
    ("tool header without a source", lambda s: s.update(tools=[{**_tool("a"), "headers": [{"name": "Authorization"}]}]), "spec.tools[0].headers[0].valueFrom"),
    ("reserved tool header", lambda s: s.update(tools=[{**_tool("a"), "headers": [_header("Host")]}]), "spec.tools[0].headers[0].name"),
    ("duplicate tool headers", lambda s: s.update(tools=[{**_tool("a"), "headers": [_header("X-A"), _header("x-a")]}]), "spec.tools[0].headers"),
    ("tool header env", lambda s: s.update(template={"env": [{"name": "VOICEFLEET_TOOL_0_HEADER_0", "value": "x"}]}), "spec.template.env[0].name"),
    ("the operator's volume", lambda s: s.update(template={"volumes": [{"name": "agent-config", "emptyDir": {}}]}), "spec.template.volumes[0].name"),
    ("duplicate volumes", lambda s: s.update(template={"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]}), "spec.template.volumes[1]"),
    ("mount of no volume", lambda s: s.update(template={"volumeMounts": [{"name": "ca", "mountPath": "/ca"}]}), "spec.template.volumeMounts"),
    ("mount over the config", lambda s: s.update(template={"volumes": [{"name": "ca", "emptyDir": {}}], "volumeMounts": [{"name": "ca", "mountPath": "/etc/voicefleet"}]}), "spec.template.volumeMounts[0].mountPath"),
    ("relative mount", lambda s: s.update(template={"volumes": [{"name": "ca", "emptyDir": {}}], "volumeMounts": [{"name": "ca", "mountPath": "ca"}]}), "spec.template.volumeMounts[0].mountPath"),
    ("sidecar named agent", lambda s: s.update(template={"containers": [{"name": "agent", "image": "busybox"}]}), "spec.template.containers[0].name"),
    ("sidecar without image", lambda s: s.update(template={"containers": [{"name": "side"}]}), "spec.template.containers[0].image"),
    ("init and sidecar of one name", lambda s: s.update(template={"initContainers": [{"name": "x", "image": "a"}], "containers": [{"name": "x", "image": "b"}]}), "spec.template.containers"),
    ("telephony without numbers", lambda s: s.update(telephony={"inbound": {"numbers": []}}), "spec.telephony.inbound.numbers"),
    ("telephony number in words", lambda s: s.update(telephony={"inbound": {"numbers": ["call me"]}}), "spec.telephony.inbound.numbers[0]"),
    ("telephony number twice", lambda s: s.update(telephony={"inbound": {"numbers": ["+15550100", "+15550100"]}}), "spec.telephony.inbound.numbers"),
    ("direct rule without a room", lambda s: s.update(telephony={"inbound": {"numbers": ["+15550100"]}, "dispatch": {"type": "direct"}}), "spec.telephony.dispatch.roomName"),
    ("individual rule with a room", lambda s: s.update(telephony={"inbound": {"numbers": ["+15550100"]}, "dispatch": {"roomName": "r"}}), "spec.telephony.dispatch.roomName"),
    ("short pin", lambda s: s.update(telephony={"inbound": {"numbers": ["+15550100"]}, "dispatch": {"pin": "12"}}), "spec.telephony.dispatch.pin"),
    ("outbound without address", lambda s: s.update(telephony={"inbound": {"numbers": ["+15550100"]}, "outbound": {"numbers": ["+15550100"]}}), "spec.telephony.outbound.address"),
]  # fmt: skip


STRICT_DECODING = {
    "voice of the wrong type (object)",
    "tools not a list",
    "unknown field",
    "literal tool header",
}


def _tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": "d", "url": "http://tools.svc/x"}


def _header(name: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": "tools", "key": "token"}}}


@pytest.mark.parametrize(("what", "mutate", "field"), BAD, ids=[b[0] for b in BAD])
def test_invalid_voiceagents_are_rejected_naming_the_field(
    operator: OperatorProcess, kube: Kube, namespace: str, what: str, mutate: Any, field: str
) -> None:
    s = copy.deepcopy(spec())
    mutate(s)
    with pytest.raises(client.ApiException) as e:
        # Strict, as kubectl sends it: an unknown field is an error, not a warning.
        kube.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            voiceagent("bad", namespace, s),
            field_validation="Strict",
        )
    # Fields the schema does not know are a strict-decoding error (400) before validation.
    assert e.value.status == (400 if what in STRICT_DECODING else 422), e.value.body
    assert field in str(e.value.body), e.value.body


def test_an_invalid_edit_of_a_running_voiceagent_changes_nothing(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("live", namespace, spec()))
    before = wait_for(lambda: ready(kube, namespace, "live"), 90, "Ready")
    dep = kube.get("apps/v1", "Deployment", "live", namespace)
    assert dep is not None
    with pytest.raises(client.ApiException) as e:
        kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "live",
            {"spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}, "model": {"speed": 9}}},
        )  # fmt: skip
    body = str(e.value.body)
    assert e.value.status == 422
    assert "spec.autoscaling.minReplicas" in body and "spec.model.speed" in body, body
    after = get_va(kube, namespace, "live")
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    now = kube.get("apps/v1", "Deployment", "live", namespace)
    assert now is not None and now["metadata"]["generation"] == dep["metadata"]["generation"]


def test_long_names_are_rejected(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    with pytest.raises(client.ApiException) as e:
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, voiceagent("a" * 60, namespace, spec())
        )
    assert e.value.status == 422 and "metadata.name" in str(e.value.body)


def test_defaults_from_the_server_match_spec_py(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    from crdgen import crd
    from voicefleet_operator.spec import parse_spec

    s = spec()
    created: Any = kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, voiceagent("defaults", namespace, s)
    )
    schema = crd.openapi_schema()["properties"]["spec"]
    assert created["spec"] == crd.apply_defaults(schema, s)
    assert parse_spec("defaults", namespace, created["spec"]) == parse_spec(
        "defaults", namespace, s
    )


@pytest.mark.slow
def test_fifty_voiceagents_all_become_ready(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    names = [f"fleet-{i:02d}" for i in range(50)]
    t0 = time.monotonic()
    for n in names:
        kube.create(voiceagent(n, namespace, spec()))
    wait_for(lambda: all(ready(kube, namespace, n) for n in names), 600, "50 VoiceAgents Ready")
    print(f"50 VoiceAgents Ready in {time.monotonic() - t0:.1f}s")


def test_two_voiceagents_one_agent_name_the_second_waits_and_takes_over(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    """`support` in two namespaces, one LiveKit server (spelled two ways), one agent name:
    the second gets AgentNameConflict naming the first, a Warning and no children, its
    failover stands down; the first is untouched. When the first goes, the second takes
    the name by itself within seconds; a first re-created then is the newer claimant and
    waits in its turn (a running fleet is never displaced). Named after the namespace: a
    `support` of an earlier test, its namespace still terminating, would hold `support`."""
    other = f"{namespace}-b"
    name = f"support-{namespace[-5:]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        for ns in (namespace, other):
            secrets(kube, ns)
        kube.create(voiceagent(name, namespace, spec()))
        first = wait_for(lambda: ready(kube, namespace, name), 90, "the first Ready")
        # The same server under another spelling (ws vs http, trailing slash).
        second_spec = spec(livekit={"url": LIVEKIT_URL.replace("ws://", "http://") + "/",
                                    "credentialsSecret": "livekit"})  # fmt: skip
        kube.create(voiceagent(name, other, second_spec))

        def conflict(ns: str) -> dict[str, Any] | None:
            c = condition(get_va(kube, ns, name), "Ready")
            return c if c.get("reason") == "AgentNameConflict" else None

        c = wait_for(lambda: conflict(other), 60, "AgentNameConflict on the second")
        assert c["status"] == "False" and f"{namespace}/{name}" in c["message"], c
        assert "spec.agentName" in c["message"]
        assert all(obj is None for obj in children(kube, other, name).values())
        warnings = [
            e for e in events(kube, other, name)
            if e["type"] == "Warning" and e["reason"] == "AgentNameConflict"
        ]  # fmt: skip
        assert len(warnings) == 1 and f"{namespace}/{name}" in warnings[0]["message"]
        wait_for(
            lambda: f"failover {other}/{name}: off" in operator.tail(400),
            30,
            "the second's failover standing down",
        )
        # The first is untouched: still Ready, the same status and children.
        now = ready(kube, namespace, name)
        assert now is not None
        assert condition(now, "Ready") == condition(first, "Ready")
        assert not [e for e in events(kube, namespace, name) if e["type"] == "Warning"]

        # The first goes: the second renders and becomes Ready, nudged by the release.
        kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        released = time.monotonic()
        wait_for(lambda: children(kube, other, name)["Deployment"], 30, "second renders")
        took = time.monotonic() - released
        wait_for(lambda: ready(kube, other, name), 90, "the second Ready")
        assert f"reconciling {other}/{name}, which claims it too" in operator.tail(400)
        assert took < 15, took
        assert any(e["reason"] == "Resolved" for e in events(kube, other, name))

        # The first again: now the newer claimant, and the second's fleet runs.
        wait_for(lambda: get_va(kube, namespace, name) is None, 30, "the first gone")
        kube.create(voiceagent(name, namespace, spec()))
        c = wait_for(lambda: conflict(namespace), 60, "AgentNameConflict on the re-created")
        assert f"{other}/{name}" in c["message"] and "already run" in c["message"], c
        assert ready(kube, other, name) is not None
    finally:
        kube.core.delete_namespace(other)
