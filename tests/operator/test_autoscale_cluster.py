"""The built-in autoscaler against the testbed's real API server and controllers (issue 5).

The operator runs as a process under its own RBAC identity; its worker pods are the
testbed's fake worker, whose live-session count each test sets through the pod's
`/control` endpoint, so a test can step demand up and down without real callers. What is
checked is what the Deployment, the ReplicaSet controller and the VoiceAgent's status do.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from voicefleet_contract import METRICS_PORT, POD_DELETION_COST
from voicefleet_testbed.kube import Kube

from .cluster import FAKE_IMAGE, OperatorProcess, get_va, secrets, voiceagent, wait_for
from .util import LIVEKIT_URL, OPENAI_BASE_URL

pytestmark = pytest.mark.cluster
SELECTOR = "app.kubernetes.io/instance={},app.kubernetes.io/name=voicefleet-worker"


def spec(window: int = 3, **autoscaling: Any) -> dict[str, Any]:
    return {
        "livekit": {"url": LIVEKIT_URL, "credentialsSecret": "livekit"},
        "model": {"apiKeySecret": {"name": "openai"}, "baseURL": OPENAI_BASE_URL},
        "sessions": {"maxPerWorker": 4, "drainTimeoutSeconds": 5},
        "autoscaling": {
            "mode": "builtin",
            "minReplicas": 1,
            "maxReplicas": 5,
            "targetUtilization": 1.0,
            "bufferSessions": 2,
            "scaleDownStabilizationSeconds": window,
            **autoscaling,
        },
        "template": {"image": FAKE_IMAGE},
    }


def replicas(kube: Kube, ns: str, name: str) -> int:
    dep = kube.get("apps/v1", "Deployment", name, ns)
    return int((dep or {}).get("spec", {}).get("replicas", -1))


def ready_pods(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    out = []
    for p in kube.list("v1", "Pod", ns, label_selector=SELECTOR.format(name)):
        conds = p.get("status", {}).get("conditions") or []
        deleting = p["metadata"].get("deletionTimestamp")
        if not deleting and any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            out.append(p)
    return out


def all_pods(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    return kube.list("v1", "Pod", ns, label_selector=SELECTOR.format(name))


def control(pod: dict[str, Any], **body: Any) -> None:
    """Set a fake worker's live sessions (or make its metrics endpoint hang)."""
    req = urllib.request.Request(
        f"http://{pod['status']['podIP']}:{METRICS_PORT}/control",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def n_ready(kube: Kube, ns: str, name: str, n: int) -> list[dict[str, Any]] | None:
    pods = ready_pods(kube, ns, name)
    return pods if len(pods) == n and replicas(kube, ns, name) == n else None


def sample(operator: OperatorProcess, name: str, **labels: str) -> float | None:
    """One sample's value from the operator's /metrics, parsed, or None when absent."""
    for family in text_string_to_metric_families(operator.metrics()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def ticks(operator: OperatorProcess, ns: str, name: str) -> int:
    """How many autoscaler ticks the operator has run for this VoiceAgent."""
    n = sample(
        operator,
        "voicefleet_autoscaler_tick_duration_seconds_count",
        namespace=ns,
        voiceagent=name,
    )
    return int(n or 0)


def test_replicas_follow_sessions_up_and_down_and_busy_workers_survive(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("ramp", namespace, spec()))
    (first,) = wait_for(lambda: n_ready(kube, namespace, "ramp", 1), 90, "one ready worker")

    # 4 live sessions + 2 buffer at 4 per worker need 2 workers.
    control(first, activeSessions=4)
    pods = wait_for(lambda: n_ready(kube, namespace, "ramp", 2), 60, "scale up to 2")
    # 4 + 3 + 2 buffer need 3.
    second = next(p for p in pods if p["metadata"]["name"] != first["metadata"]["name"])
    control(second, activeSessions=3)
    pods = wait_for(lambda: n_ready(kube, namespace, "ramp", 3), 60, "scale up to 3")

    va = get_va(kube, namespace, "ramp") or {}
    auto = va["status"]["autoscaler"]
    assert auto["sessions"] == 7 and auto["desiredReplicas"] == 3, auto
    assert va["status"]["activeSessions"] == 7
    desired = "voicefleet_autoscaler_desired_replicas"
    assert sample(operator, desired, namespace=namespace, voiceagent="ramp") == 3

    # Callers leave the first worker: 3 + 2 buffer need 2 workers. After the window the
    # autoscaler removes one, and deletion costs make it an idle one, never `second`.
    control(first, activeSessions=0)
    wait_for(lambda: replicas(kube, namespace, "ramp") == 2, 60, "scale down to 2")
    names = {p["metadata"]["name"]: p for p in all_pods(kube, namespace, "ramp")}
    costs = {
        n: (p["metadata"].get("annotations") or {}).get(POD_DELETION_COST) for n, p in names.items()
    }
    assert costs[second["metadata"]["name"]] == "3", costs
    survivors = wait_for(lambda: n_ready(kube, namespace, "ramp", 2), 60, "two workers left")
    assert second["metadata"]["name"] in {p["metadata"]["name"] for p in survivors}

    # Everyone leaves: down to minReplicas, and the busy worker was never removed while busy.
    control(second, activeSessions=0)
    wait_for(lambda: n_ready(kube, namespace, "ramp", 1), 60, "scale down to the minimum")
    reasons = {
        e["reason"]
        for e in kube.list("v1", "Event", namespace)
        if e["involvedObject"]["name"] == "ramp"
    }
    assert "Scaled" in reasons


def test_unanswering_worker_counts_as_full_and_blocks_scale_down(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("hang", namespace, spec(window=2, bufferSessions=1)))
    (first,) = wait_for(lambda: n_ready(kube, namespace, "hang", 1), 90, "one ready worker")
    control(first, activeSessions=4)  # 4 + 1 buffer at 4 per worker need 2
    wait_for(lambda: n_ready(kube, namespace, "hang", 2), 60, "scale up to 2")

    # The busy worker's metrics endpoint hangs and its sessions "drop" to zero behind it:
    # the autoscaler cannot know, so it must keep counting it as full (4 sessions + 1
    # buffer still need 2 workers; counted as empty, 1 would do).
    control(first, activeSessions=0, hang=True)

    def unanswered() -> dict[str, Any] | None:
        auto = ((get_va(kube, namespace, "hang") or {}).get("status") or {}).get("autoscaler")
        return auto if auto and auto.get("unansweredWorkers") == 1 else None

    wait_for(unanswered, 30, "the autoscaler to notice the hung worker")
    # Let several stabilisation windows' worth of ticks pass (counted from the operator's
    # own tick counter, not by sleeping): replicas must not fall.
    start = ticks(operator, namespace, "hang")
    wait_for(lambda: ticks(operator, namespace, "hang") >= start + 6, 30, "6 more ticks")
    assert replicas(kube, namespace, "hang") == 2
    auto = unanswered()
    assert auto is not None and auto["sessions"] >= 4, auto

    # Control: once it answers again (0 sessions), the fleet shrinks to the minimum.
    control(first, hang=False)
    wait_for(lambda: n_ready(kube, namespace, "hang", 1), 60, "scale down once it answers")


def test_max_replicas_limits_and_is_reported(
    operator: OperatorProcess, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("cap", namespace, spec(maxReplicas=2, bufferSessions=0)))
    (first,) = wait_for(lambda: n_ready(kube, namespace, "cap", 1), 90, "one ready worker")
    control(first, activeSessions=5)
    pods = wait_for(lambda: n_ready(kube, namespace, "cap", 2), 60, "scale up to 2")
    for p in pods:
        control(p, activeSessions=4)  # 8 sessions need 2; 12 would need 3 > max

    def limited() -> dict[str, Any] | None:
        auto = ((get_va(kube, namespace, "cap") or {}).get("status") or {}).get("autoscaler")
        return auto if auto and auto.get("limitedByMax") else None

    control(pods[0], activeSessions=8)
    auto = wait_for(limited, 30, "limitedByMax in status")
    assert auto["desiredReplicas"] == 2 and auto["neededReplicas"] == 3, auto
    assert replicas(kube, namespace, "cap") == 2
    limited_metric = "voicefleet_autoscaler_limited_by_max"
    assert sample(operator, limited_metric, namespace=namespace, voiceagent="cap") == 1
