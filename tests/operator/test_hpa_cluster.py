"""Autoscaling mode hpa end to end, with the operator serving the custom metrics API
(`--custom-metrics-port`) behind the testbed API server's aggregation layer: the real
HPA controller (kube-controller-manager) reads `voicefleet_worker_active_sessions`
through `custom.metrics.k8s.io` and scales the worker Deployment.

The workers are the testbed's fake workers (their live sessions set through `/control`,
as in test_autoscale_cluster.py); the operator follows them through its `/sessions`
feed as in any mode. The operator is a host process, so the APIService's Service is an
ExternalName `localhost` (the API server dials it as named; EndpointSlices may not hold
loopback addresses) and the serving certificate names `<service>.<namespace>.svc`, which
the API server checks against the APIService's caBundle.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from voicefleet_testbed.binaries import Binaries
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from .cluster import (
    CUSTOM_METRICS_SERVICE,
    CUSTOM_METRICS_VERSIONS,
    FAKE_IMAGE,
    HPA_SA,
    OPERATOR_NS,
    OperatorProcess,
    custom_metrics_available,
    install_custom_metrics_api,
    secrets,
    voiceagent,
    wait_for,
)
from .test_autoscale_cluster import control, n_ready, ready_pods, replicas
from .util import LIVEKIT_URL, OPENAI_BASE_URL

pytestmark = pytest.mark.cluster
METRIC = "voicefleet_worker_active_sessions"
SERVICE = CUSTOM_METRICS_SERVICE
VERSIONS = CUSTOM_METRICS_VERSIONS


def raw(stack: Stack, path: str, token: str | None = None) -> tuple[int, Any]:
    """`kubectl get --raw PATH` against the stack's API server (as admin, or `token`):
    (0, the JSON) or (its exit code, stderr)."""
    kubectl = str(Binaries.locate().kubectl)
    who = (
        [f"--kubeconfig={stack.kubeconfig}"]
        if token is None
        else [
            f"--server={stack.api_server}",
            f"--certificate-authority={stack.pki.ca_cert}",
            f"--token={token}",
            "--kubeconfig=/dev/null",
        ]
    )
    out = subprocess.run(
        [kubectl, *who, "get", "--raw", path], capture_output=True, text=True, timeout=30
    )
    return (0, json.loads(out.stdout)) if out.returncode == 0 else (out.returncode, out.stderr)


def sessions_path(namespace: str, pod: str = "*", version: str = "v1beta2") -> str:
    return f"/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/pods/{pod}/{METRIC}"


def values(stack: Stack, namespace: str, **kw: str) -> dict[str, str] | None:
    """Pod name -> value, as the API server relays the operator's answer."""
    code, body = raw(stack, sessions_path(namespace, **kw))
    if code != 0:
        return None
    return {i["describedObject"]["name"]: i["value"] for i in body["items"]}


@pytest.fixture(scope="module")
def custom_metrics(
    operator: OperatorProcess, stack: Stack, kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """The session's operator restarted with --custom-metrics-port, its RBAC, Service and
    APIServices in place; restarted without it (and the objects removed) afterwards."""
    flags = install_custom_metrics_api(stack, kube, tmp_path_factory.mktemp("custom-metrics-tls"))
    operator.stop()
    operator.extra_args = flags
    try:
        operator.start()
        wait_for(partial(custom_metrics_available, kube), 60, "the APIServices Available")
        yield int(flags[0].split("=")[1])
    finally:
        for v in VERSIONS:
            kube.delete("apiregistration.k8s.io/v1", "APIService", f"{v}.custom.metrics.k8s.io")
        kube.delete("v1", "Service", SERVICE, OPERATOR_NS)
        operator.stop()
        operator.extra_args = []
        operator.start()


def spec() -> dict[str, Any]:
    return {
        "livekit": {"url": LIVEKIT_URL, "credentialsSecret": "livekit"},
        "model": {"apiKeySecret": {"name": "openai"}, "baseURL": OPENAI_BASE_URL},
        "sessions": {"maxPerWorker": 4, "drainTimeoutSeconds": 5},
        # The HPA's target: 4 sessions a worker on average (maxPerWorker x 1.0).
        "autoscaling": {
            "mode": "hpa",
            "minReplicas": 1,
            "maxReplicas": 4,
            "targetUtilization": 1.0,
        },
        "template": {"image": FAKE_IMAGE},
    }


def test_the_hpa_scales_workers_on_sessions_the_operator_serves(
    custom_metrics: int, stack: Stack, kube: Kube, namespace: str
) -> None:
    secrets(kube, namespace)
    kube.create(voiceagent("hpa", namespace, spec()))
    (first,) = wait_for(lambda: n_ready(kube, namespace, "hpa", 1), 90, "one ready worker")
    name = first["metadata"]["name"]
    # Through the aggregation layer, in both versions: the worker and its sessions.
    got = wait_for(lambda: values(stack, namespace), 30, "the metric through the API server")
    assert got == {name: "0"}, got
    code, one = raw(stack, sessions_path(namespace, name, "v1beta1"))
    assert code == 0 and one["items"][0]["metricName"] == METRIC, one
    code, err = raw(stack, sessions_path(namespace, "not-a-worker"))
    assert code != 0 and "not a VoiceAgent worker pod" in err, err

    # 10 live sessions on one worker at 4 a worker: the HPA wants ceil(10 / 4) = 3.
    control(first, activeSessions=10)
    wait_for(lambda: (values(stack, namespace) or {}).get(name) == "10", 30, "10 sessions")
    wait_for(lambda: replicas(kube, namespace, "hpa") == 3, 90, "the HPA scales to 3")
    pods = wait_for(lambda: n_ready(kube, namespace, "hpa", 3), 60, "three ready workers")
    hpa = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", "hpa", namespace) or {}
    st = hpa.get("status", {})
    conds = {c["type"]: c for c in st.get("conditions") or []}
    assert conds["ScalingActive"]["status"] == "True", conds
    assert conds["AbleToScale"]["status"] == "True", conds
    (current,) = st["currentMetrics"]
    assert current["pods"]["metric"]["name"] == METRIC, current
    # Every worker is answered, the new ones with 0; the average (10/3) is under the
    # target, so the HPA holds at 3.
    everyone: dict[str, str] = wait_for(
        lambda: values(stack, namespace) if len(values(stack, namespace) or {}) == 3 else None,
        30,
        "all three workers in the metric",
    )
    assert sorted(everyone.values()) == ["0", "0", "10"], everyone
    assert {p["metadata"]["name"] for p in pods} == set(everyone)
    # The HPA's next sync reads all three: an average of 10/3 sessions, under the target
    # of 4, so it holds at 3.
    wait_for(lambda: average(kube, namespace) == "3333m", 60, "the HPA to read three workers' 10/3")
    hpa = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", "hpa", namespace) or {}
    assert hpa["status"]["desiredReplicas"] == 3, hpa["status"]
    assert replicas(kube, namespace, "hpa") == 3
    assert len(ready_pods(kube, namespace, "hpa")) == 3


def average(kube: Kube, namespace: str) -> str | None:
    """The average the HPA last read for its Pods metric."""
    hpa = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", "hpa", namespace) or {}
    for m in hpa.get("status", {}).get("currentMetrics") or []:
        return str(m["pods"]["current"]["averageValue"])
    return None


def test_who_may_read_the_metric(
    custom_metrics: int, stack: Stack, kube: Kube, namespace: str
) -> None:
    # The HPA controller's ServiceAccount, by operator/rbac/custom-metrics.yaml's
    # ClusterRole: allowed by the API server, and by the operator's SubjectAccessReview.
    hpa_token = kube.mint_token(*HPA_SA, seconds=600)
    code, body = raw(stack, sessions_path(namespace), token=hpa_token)
    assert code == 0 and body["kind"] == "MetricValueList", body
    # Anyone else: refused (by the API server first).
    nobody = kube.mint_token(namespace, "nobody", seconds=600)
    code, err = raw(stack, sessions_path(namespace), token=nobody)
    assert code != 0 and "forbidden" in err.lower(), err

    # Straight to the operator's port: only the front proxy's certificate gets in, and the
    # user it names is checked by the operator itself.
    fp_cert, fp_key = stack.pki.front_proxy_client
    url = f"https://127.0.0.1:{custom_metrics}{sessions_path(namespace)}"

    def direct(cert: tuple[Path, Path] | None, headers: dict[str, str]) -> int:
        ctx = ssl.create_default_context(cafile=str(stack.pki.ca_cert))
        ctx.check_hostname = False  # the certificate names the Service, not 127.0.0.1
        if cert is not None:
            ctx.load_cert_chain(*cert)
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    admin = {"X-Remote-User": "testbed-admin", "X-Remote-Group": "system:masters"}
    assert direct((fp_cert, fp_key), admin) == 200
    assert (
        direct((fp_cert, fp_key), {"X-Remote-User": f"system:serviceaccount:{namespace}:nobody"})
        == 403
    )
    assert direct((fp_cert, fp_key), {}) == 401  # the proxy named no user
    # A client certificate of the cluster CA (any component has one), even with the front
    # proxy's name, and no certificate at all: the TLS handshake fails.
    impostor = stack.pki.issue("impostor-front-proxy", "front-proxy-client")
    for cert in (impostor, None):
        with pytest.raises(
            (ssl.SSLError, ConnectionResetError, socket.error, urllib.error.URLError)
        ):
            direct(cert, admin)
