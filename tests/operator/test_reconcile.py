"""reconcile.py against a fake API: what is applied, when nothing is, what status says."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from voicefleet_operator.kube import KubeError, path_of
from voicefleet_operator.reconcile import reconcile, va_path
from voicefleet_operator.settings import FIELD_MANAGER, REPLICAS_FIELD_MANAGER, Settings

from .util import body, minimal_spec

NS = "voice"


class FakeKube:
    """Objects by path; apply merges dicts shallowly enough for these tests."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.applies: list[tuple[str, str]] = []
        self.status_patches = 0
        self.rv = 0
        self.deleted: list[str] = []

    def put(self, p: str, obj: dict[str, Any]) -> None:
        self.objects[p] = obj

    def get(self, path: str) -> dict[str, Any] | None:
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        return []

    def apply(self, obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        p = path_of(obj)
        self.applies.append((obj["kind"], field_manager))
        current = self.objects.get(p)
        new = copy.deepcopy(dict(obj))
        if current is not None:
            merged = copy.deepcopy(current)
            merged.setdefault("spec", {}).update(new.get("spec", {}))
            new = {**merged, **{k: v for k, v in new.items() if k != "spec"}}
            new["spec"] = merged["spec"]
        gen = (current or {}).get("metadata", {}).get("generation", 0)
        changed = current is None or current.get("spec") != new.get("spec")
        new["metadata"] = {**new.get("metadata", {}), "generation": gen + 1 if changed else gen}
        self.objects[p] = new
        return copy.deepcopy(new)

    def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.status_patches += 1
        self.objects[path]["status"] = dict(status)
        return self.objects[path]

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError(f"the reconciler does not merge-patch ({path})")

    def delete(self, path: str) -> None:
        self.deleted.append(path)
        self.objects.pop(path, None)


def _setup(spec: dict[str, Any] | None = None, secrets: bool = True) -> FakeKube:
    k = FakeKube()
    k.put(va_path(NS, "support"), body(spec or minimal_spec(), namespace=NS))
    if secrets:
        k.put(f"/api/v1/namespaces/{NS}/secrets/livekit", {"data": {"apiKey": "", "apiSecret": ""}})
        k.put(f"/api/v1/namespaces/{NS}/secrets/openai", {"data": {"apiKey": ""}})
    return k


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_creates_children_then_is_quiet() -> None:
    k = _setup()
    out = reconcile(k, Settings(), NS, "support")
    kinds = [a for a in k.applies]
    assert kinds == [
        ("ConfigMap", FIELD_MANAGER),
        ("Service", FIELD_MANAGER),
        ("PodDisruptionBudget", FIELD_MANAGER),
        ("Deployment", FIELD_MANAGER),
        ("Deployment", REPLICAS_FIELD_MANAGER),
    ]
    dep = k.objects[f"/apis/apps/v1/namespaces/{NS}/deployments/support"]
    assert dep["spec"]["replicas"] == 1
    assert [e.reason for e in out.events] == ["Created"]
    assert k.status_patches == 1
    again = reconcile(k, Settings(), NS, "support")
    assert again.events == [] and k.status_patches == 1  # nothing changed, nothing written


def test_missing_secret_changes_nothing_running() -> None:
    k = _setup()
    reconcile(k, Settings(), NS, "support")
    applies = len(k.applies)
    del k.objects[f"/api/v1/namespaces/{NS}/secrets/openai"]
    out = reconcile(k, Settings(), NS, "support")
    assert len(k.applies) == applies
    assert _ready(out.status or {})["reason"] == "SecretNotFound"
    assert "spec.model.apiKeySecret.name" in _ready(out.status or {})["message"]
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "SecretNotFound")]
    # The same problem again: no second Warning.
    assert reconcile(k, Settings(), NS, "support").events == []
    k.put(f"/api/v1/namespaces/{NS}/secrets/openai", {"data": {"apiKey": ""}})
    assert [e.reason for e in reconcile(k, Settings(), NS, "support").events] == ["Resolved"]


def test_missing_key() -> None:
    k = _setup()
    k.put(f"/api/v1/namespaces/{NS}/secrets/livekit", {"data": {"apiKey": ""}})
    out = reconcile(k, Settings(), NS, "support")
    assert _ready(out.status or {})["reason"] == "SecretKeyMissing"
    assert k.applies == []


def test_invalid_spec_is_a_condition() -> None:
    spec = minimal_spec()
    spec["model"]["voice"] = "marine"
    k = _setup(spec)
    out = reconcile(k, Settings(), NS, "support")
    assert _ready(out.status or {})["reason"] == "InvalidSpec"
    assert "spec.model.voice" in _ready(out.status or {})["message"]
    assert k.applies == []


def test_hpa_mode_lets_go_of_replicas() -> None:
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "hpa", "minReplicas": 2, "maxReplicas": 5}
    k = _setup(spec)
    reconcile(k, Settings(), NS, "support")
    assert k.applies[-2:] == [
        ("Deployment", REPLICAS_FIELD_MANAGER),  # seeded at creation
        ("HorizontalPodAutoscaler", FIELD_MANAGER),
    ]
    dep_path = f"/apis/apps/v1/namespaces/{NS}/deployments/support"
    k.objects[dep_path]["spec"]["replicas"] = 4  # the HPA scaled
    k.applies.clear()
    reconcile(k, Settings(), NS, "support")
    assert ("Deployment", REPLICAS_FIELD_MANAGER) not in k.applies
    assert k.objects[dep_path]["spec"]["replicas"] == 4
    # Back to builtin: the HPA goes, the replicas stay for the autoscaler to take over.
    hpa_path = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/support"
    assert hpa_path in k.objects
    va = k.objects[va_path(NS, "support")]
    va["spec"]["autoscaling"]["mode"] = "builtin"
    reconcile(k, Settings(), NS, "support")
    assert hpa_path in k.deleted and k.objects[dep_path]["spec"]["replicas"] == 4


def test_keda_mode_without_keda_is_a_condition_and_changes_nothing() -> None:
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "keda", "minReplicas": 0, "maxReplicas": 5}
    k = _setup(spec)
    out = reconcile(k, Settings(), NS, "support")
    ready = _ready(out.status or {})
    assert ready["reason"] == "AutoscalerUnavailable" and "keda.sh" in ready["message"]
    assert "spec.autoscaling.mode" in ready["message"]
    assert k.applies == []
    # KEDA installed: the ScaledObject is applied with the operator's Prometheus URL.
    k.put("/apis/keda.sh/v1alpha1", {"kind": "APIResourceList"})
    reconcile(k, Settings(prometheus_url="http://127.0.0.1:9090"), NS, "support")
    so = k.objects[f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/support"]
    assert so["spec"]["triggers"][0]["metadata"]["serverAddress"] == "http://127.0.0.1:9090"


def test_rejected_apply_is_a_condition_and_transient_errors_raise() -> None:
    k = _setup()

    def reject(obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        raise KubeError(422, "Invalid", "spec.template.spec.affinity: Invalid value")

    k.apply = reject  # type: ignore[method-assign]
    out = reconcile(k, Settings(), NS, "support")
    assert _ready(out.status or {})["reason"] == "ApplyFailed"

    def unavailable(obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        raise KubeError(503, "ServiceUnavailable", "etcd")

    k.apply = unavailable  # type: ignore[method-assign]
    with pytest.raises(KubeError) as e:  # transient: propagates, kopf retries
        reconcile(k, Settings(), NS, "support")
    assert e.value.transient


def test_gone_voiceagent_is_a_no_op() -> None:
    assert reconcile(FakeKube(), Settings(), NS, "support").body is None
