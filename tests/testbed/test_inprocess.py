"""In-process pods: an image-table entry with `inprocess: fake-worker` makes the node agent
serve the fake worker's endpoints on each pod's IP itself (no process per pod), so
benchmarks can run thousands of worker pods. Readiness still goes over HTTP to the pod IP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from voicefleet_contract import HEALTH_PORT, METRICS_PORT, METRICS_PORT_NAME
from voicefleet_contract.metrics import WORKER_ACTIVE_SESSIONS, WORKER_DRAINING
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.procs import wait_for
from voicefleet_testbed.stack import Stack

pytestmark = pytest.mark.cluster
JSON = dict[str, Any]
IMAGE = "voicefleet.dev/testbed/fake-worker-inprocess:1"  # testbed/images.yaml maps it


def deployment(name: str, replicas: int) -> JSON:
    container: JSON = {
        "name": "worker",
        "image": IMAGE,
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "FAKE_CAPACITY", "value": "4"},
            {"name": "FAKE_DRAIN_TIMEOUT", "value": "60"},
        ],
        "ports": [
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT},
            {"name": "health", "containerPort": HEALTH_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/", "port": "health"}, "periodSeconds": 1},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 60, "containers": [container]},
            },
        },
    }


def http(method: str, url: str, body: JSON | None = None) -> str:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
        return str(r.read().decode())


def ready_ips(kube: Kube, ns: str, app: str, n: int) -> list[str] | None:
    pods = kube.list("v1", "Pod", ns, label_selector=f"app={app}")
    ips = [
        p["status"]["podIP"]
        for p in pods
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions") or []
        )
    ]
    return ips if len(ips) == n == len(pods) else None


def test_inprocess_fake_workers_become_ready_and_serve_sessions_and_control(
    stack: Stack, kube: Kube, namespace: str
) -> None:
    kube.create(deployment("inproc", 3), namespace)
    ips = wait_for(lambda: ready_ips(kube, namespace, "inproc", 3), 60, "3 ready in-process pods")
    assert len(set(ips)) == 3  # each on its own pod IP

    ip = ips[0]
    sessions = json.loads(http("GET", f"http://{ip}:{METRICS_PORT}/sessions"))
    assert sessions["activeSessions"] == 0 and sessions["capacity"] == 4
    after = json.loads(http("POST", f"http://{ip}:{METRICS_PORT}/control", {"activeSessions": 3}))
    assert after["activeSessions"] == 3
    assert json.loads(http("GET", f"http://{ip}:{METRICS_PORT}/sessions"))["activeSessions"] == 3
    assert f"{WORKER_ACTIVE_SESSIONS.name} 3" in http("GET", f"http://{ip}:{METRICS_PORT}/metrics")
    # The other pods are separate workers.
    assert (
        json.loads(http("GET", f"http://{ips[1]}:{METRICS_PORT}/sessions"))["activeSessions"] == 0
    )
    # No process per pod: nothing under the pods directory records a PID.
    assert not list((stack.pods_dir / namespace).glob("*/*.pid"))

    # Scale to zero: the busy worker drains (SIGTERM) and keeps serving until its sessions
    # end; the idle ones stop at once.
    kube.apps.patch_namespaced_deployment_scale("inproc", namespace, {"spec": {"replicas": 0}})

    def draining() -> bool:
        return f"{WORKER_DRAINING.name} 1" in http("GET", f"http://{ip}:{METRICS_PORT}/metrics")

    wait_for(draining, 30, "the busy worker to drain")
    http("POST", f"http://{ip}:{METRICS_PORT}/control", {"activeSessions": 0})
    wait_for(
        lambda: not kube.list("v1", "Pod", namespace, label_selector="app=inproc"),
        30,
        "every pod gone once the last session ended",
    )
    with pytest.raises(urllib.error.URLError):
        http("GET", f"http://{ip}:{HEALTH_PORT}/")
