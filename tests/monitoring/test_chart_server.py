"""Every object the chart renders, for every switch, through a server-side dry-run on the
testbed's real API server: its schemas (the built-in kinds', the VoiceAgent CRD's, kopf's,
and prometheus-operator's own CRDs for the monitoring objects, from its Go module), its
defaulting and its admission (Pod Security `restricted` on the release namespace), without
storing anything. The offline checks (tests/monitoring/test_chart.py) run the schemas
only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic.exceptions import DynamicApiError

from voicefleet_testbed.binaries import Binaries
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.procs import wait_for

from ..operator.cluster import install_crd
from .chart import ALL_MODES, CALL_PAGE, template

pytestmark = pytest.mark.cluster

MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")


@pytest.fixture(scope="module")
def namespaces(kube: Kube) -> Iterator[tuple[str, str, str]]:
    """The release namespace (Pod Security `restricted`) and two watched ones."""
    uid = uuid.uuid4().hex[:5]
    names = (f"dry-{uid}", f"dry-{uid}-a", f"dry-{uid}-b")
    for i, n in enumerate(names):
        labels = {"pod-security.kubernetes.io/enforce": "restricted"} if i == 0 else {}
        kube.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=n, labels=labels))
        )
    yield names
    for n in names:
        kube.core.delete_namespace(n)


@pytest.fixture(scope="module")
def served_kinds(kube: Kube) -> None:
    """The CRDs the chart's objects need: its own (VoiceAgent, kopf's peering) and
    prometheus-operator's monitoring kinds, as a cluster with kube-prometheus-stack has."""
    install_crd(kube, "voiceagent.yaml")
    install_crd(kube, "kopf-peering.yaml")
    crds = Binaries.locate().monitoring_crds
    if not crds.is_dir():
        pytest.fail(f"prometheus-operator's CRDs are missing ({crds}): run `make binaries`")
    names = []
    for kind in MONITORING_CRDS:
        crd = yaml.safe_load((crds / f"monitoring.coreos.com_{kind}.yaml").read_text())
        kube.apply(crd, manager="testbed")
        names.append(crd["metadata"]["name"])

    wait_for(lambda: kube.crds_established(names), 30, "prometheus-operator's CRDs established")


def switches(watch: tuple[str, str]) -> dict[str, dict[str, str]]:
    """Value sets that together switch every part of the chart on and off."""
    watched = {"watchNamespaces[0]": watch[0], "watchNamespaces[1]": watch[1]}
    digest = "sha256:" + "0" * 64
    return {
        "defaults": {},
        "every-mode": {**ALL_MODES, **watched},
        "off": {"webhook.enabled": "false", "networkPolicy.enabled": "false",
                "crds.install": "false", "rbac.create": "false",
                "serviceAccount.create": "false"},
        "extras": {
            "nameOverride": "vf", "image.digest": digest, "worker.image.digest": digest,
            "extraEnv[0].name": "SSL_CERT_FILE", "extraEnv[0].value": "/etc/ca/bundle.crt",
            "extraVolumes[0].name": "ca", "extraVolumes[0].configMap.name": "ca",
            "extraVolumeMounts[0].name": "ca", "extraVolumeMounts[0].mountPath": "/etc/ca",
            "topologySpreadConstraints[0].maxSkew": "1",
            "topologySpreadConstraints[0].topologyKey": "topology.kubernetes.io/zone",
            "topologySpreadConstraints[0].whenUnsatisfiable": "ScheduleAnyway",
            "operator.prometheusUrl": "http://prometheus.monitoring.svc:9090",
            "webhook.service.type": "NodePort", "crds.keep": "false",
            "monitoring.prometheusRule.enabled": "true",
            "monitoring.prometheusRule.turnLatencyThresholdSeconds": "1.5",
            **CALL_PAGE, "callPage.service.type": "NodePort",
        },
    }  # fmt: skip


@pytest.mark.parametrize("switch", ["defaults", "every-mode", "off", "extras"])
def test_every_rendered_object_passes_a_server_side_dry_run(
    kube: Kube, namespaces: tuple[str, str, str], served_kinds: None, switch: str
) -> None:
    release_ns, *watch = namespaces
    docs = template(switches((watch[0], watch[1]))[switch], namespace=release_ns)
    assert docs
    refused: list[str] = []
    for doc in docs:
        what = f"{doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
        try:
            kube.apply(doc, namespace=doc["metadata"].get("namespace") or release_ns,
                       manager="dry-run", dry_run=True)  # fmt: skip
        except DynamicApiError as e:  # every refusal, not only the first
            refused.append(f"{what}: {e.status} {e.body}")
    assert refused == [], "\n".join(refused)
    kinds: set[str] = {d["kind"] for d in docs}
    if switch == "every-mode":
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "KopfPeering"} <= kinds


def test_a_dry_run_would_catch_a_bad_object(
    kube: Kube, namespaces: tuple[str, str, str], served_kinds: None
) -> None:
    """The check can fail: a PrometheusRule with a rule missing `expr` (prometheus-operator's
    schema), and the chart's test pod made privileged in the `restricted` release namespace
    (Pod Security admission; it enforces on pods, and only warns on a Deployment), are
    refused."""
    release_ns = namespaces[0]
    docs = template({"monitoring.prometheusRule.enabled": "true"}, namespace=release_ns)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    rule["spec"]["groups"][0]["rules"][0].pop("expr")
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    spec: dict[str, Any] = pod["spec"]
    spec["containers"][0]["securityContext"] = {"privileged": True}
    for bad in (rule, pod):
        with pytest.raises(DynamicApiError) as e:
            kube.apply(bad, manager="dry-run", dry_run=True)
        assert e.value.status in (400, 403, 422), e.value
