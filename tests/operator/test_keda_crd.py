"""The ScaledObject autoscaling mode keda renders, against KEDA's own ScaledObject CRD
(config/crd/bases of KEDA's Go module, fetched by `make binaries` at the version in
testbed/versions.env): a server-side dry-run on the testbed's API server with strict field
validation, so a misspelt or unknown field is refused instead of silently pruned. No KEDA
process is needed; the end-to-end proof that KEDA acts on it is
tests/e2e/test_keda_mode.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from voicefleet_operator.render import Owner
from voicefleet_operator.render_autoscaler import render_scaled_object
from voicefleet_operator.spec import parse_spec
from voicefleet_testbed.keda import KedaBinaries, install_crds
from voicefleet_testbed.kube import Kube

from .util import body, minimal_spec

pytestmark = pytest.mark.cluster
JSON = dict[str, Any]


@pytest.fixture(scope="module")
def keda_crds(kube: Kube) -> None:
    crds = KedaBinaries.locate().crds
    if not (crds / "keda.sh_scaledobjects.yaml").is_file():
        pytest.fail(f"KEDA's CRDs are missing ({crds}): run `make binaries`")
    install_crds(kube, crds)


def scaled_object(namespace: str, **autoscaling: Any) -> JSON:
    raw = minimal_spec()
    raw["sessions"] = {"maxPerWorker": 5}
    raw["autoscaling"] = {"mode": "keda", **autoscaling}
    spec = parse_spec("support", namespace, raw)
    return render_scaled_object(spec, Owner.from_body(body(minimal_spec())), "http://prom:9090")


def dry_run(kube: Kube, namespace: str, so: JSON) -> str:
    """'' when the API server would store the ScaledObject, else why it refuses it."""
    try:
        kube.custom.create_namespaced_custom_object(
            "keda.sh", "v1alpha1", namespace, "scaledobjects", so,
            dry_run="All", field_validation="Strict",
        )  # fmt: skip
    except client.ApiException as e:
        return f"{e.status} {e.body}"
    return ""


@pytest.mark.parametrize(
    "autoscaling",
    [
        {},
        {"minReplicas": 0, "maxReplicas": 40, "bufferSessions": 0},
        {"targetUtilization": 0.7, "bufferSessions": 4, "scaleUpStabilizationSeconds": 30},
        {"scaleDownStabilizationSeconds": 0},
    ],
)
def test_rendered_scaled_object_fits_kedas_crd(
    kube: Kube, keda_crds: None, namespace: str, autoscaling: JSON
) -> None:
    so = scaled_object(namespace, **autoscaling)
    assert dry_run(kube, namespace, so) == ""
    # Beyond the schema (trigger metadata is a string map): KEDA's Prometheus scaler
    # decodes `threshold` as a JSON number into a float64, so "3500m" fails the object.
    threshold = so["spec"]["triggers"][0]["metadata"]["threshold"]
    assert isinstance(json.loads(threshold), int | float), threshold


@pytest.mark.parametrize(
    ("break_it", "where"),
    [
        (lambda so: so["spec"].update(pollingIntervall=5), "pollingIntervall"),
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(threshold=3), "threshold"),
        (lambda so: so["spec"].pop("scaleTargetRef"), "scaleTargetRef"),
    ],
)
def test_the_dry_run_refuses_what_the_crd_does_not_allow(
    kube: Kube, keda_crds: None, namespace: str, break_it: Callable[[JSON], object], where: str
) -> None:
    so = scaled_object(namespace)
    break_it(so)
    assert where in dry_run(kube, namespace, so)
