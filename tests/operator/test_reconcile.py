"""reconcile.py against a fake API: what is applied, when nothing is, what status says."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from voicefleet_operator.kube import Applied, KubeError, path_of
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
        self.uid = 0

    def put(self, p: str, obj: dict[str, Any]) -> None:
        self.objects[p] = obj

    def get(self, path: str) -> dict[str, Any] | None:
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        return []

    def apply(self, obj: Mapping[str, Any], field_manager: str) -> Applied:
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
        if current is None:
            self.uid += 1
            new["metadata"]["uid"] = f"uid-{self.uid}"
        self.objects[p] = new
        return Applied(copy.deepcopy(new), created=current is None)

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

    def reject(obj: Mapping[str, Any], field_manager: str) -> Applied:
        raise KubeError(422, "Invalid", "spec.template.spec.affinity: Invalid value")

    k.apply = reject  # type: ignore[method-assign]
    out = reconcile(k, Settings(), NS, "support")
    assert _ready(out.status or {})["reason"] == "ApplyFailed"

    def unavailable(obj: Mapping[str, Any], field_manager: str) -> Applied:
        raise KubeError(503, "ServiceUnavailable", "etcd")

    k.apply = unavailable  # type: ignore[method-assign]
    with pytest.raises(KubeError) as e:  # transient: propagates, kopf retries
        reconcile(k, Settings(), NS, "support")
    assert e.value.transient


def test_gone_voiceagent_is_a_no_op() -> None:
    assert reconcile(FakeKube(), Settings(), NS, "support").body is None


DEP = f"/apis/apps/v1/namespaces/{NS}/deployments/support"
CM = f"/api/v1/namespaces/{NS}/configmaps/support-config"


def test_first_creation_is_created_even_after_a_blocked_reconcile() -> None:
    k = _setup(secrets=False)
    blocked = reconcile(k, Settings(), NS, "support")
    assert _ready(blocked.status or {})["reason"] == "SecretNotFound"
    assert (blocked.status or {})["observedGeneration"] == 1
    k.put(f"/api/v1/namespaces/{NS}/secrets/livekit", {"data": {"apiKey": "", "apiSecret": ""}})
    k.put(f"/api/v1/namespaces/{NS}/secrets/openai", {"data": {"apiKey": ""}})
    out = reconcile(k, Settings(), NS, "support")
    assert [e.reason for e in out.events] == ["Resolved", "Created"]


def test_deleted_children_are_recreated_and_reported_so() -> None:
    k = _setup()
    reconcile(k, Settings(), NS, "support")
    del k.objects[DEP]
    del k.objects[CM]
    out = reconcile(k, Settings(), NS, "support")
    assert [e.reason for e in out.events] == ["Recreated"]
    assert "Deployment support" in out.events[0].message
    assert "ConfigMap support-config" in out.events[0].message
    assert k.objects[DEP]["spec"]["replicas"] == 1
    assert reconcile(k, Settings(), NS, "support").events == []


def test_deployment_deleted_between_read_and_apply_is_recreated_not_drift() -> None:
    """The race behind a flaky cluster test: the reconcile read the Deployment, a human
    deleted it, then the apply created it. Only the apply's answer can tell."""
    k = _setup()
    reconcile(k, Settings(), NS, "support")
    k.objects[DEP]["metadata"]["generation"] = 7  # edits by hand and rollouts before
    real_get = k.get

    def get_then_delete(path: str) -> dict[str, Any] | None:
        got = real_get(path)
        if path == DEP:
            k.objects.pop(DEP, None)  # deleted right after the reconcile read it
        return got

    k.get = get_then_delete  # type: ignore[method-assign]
    out = reconcile(k, Settings(), NS, "support")
    assert [e.reason for e in out.events] == ["Recreated"]
    assert "Deployment support" in out.events[0].message
    assert k.objects[DEP]["spec"]["replicas"] == 1


def test_replicas_apply_on_a_vanished_deployment_creates_it() -> None:
    """mode none applies replicas first; on a Deployment gone since the read that apply
    is refused (it cannot create one), and the reconcile creates it instead."""
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "none"}
    spec["replicas"] = 3
    k = _setup(spec)
    reconcile(k, Settings(), NS, "support")
    k.objects[DEP]["spec"]["replicas"] = 2  # someone scaled the Deployment itself
    real_apply, real_get = k.apply, k.get
    state = {"read": False}

    def get(path: str) -> dict[str, Any] | None:
        got = real_get(path)
        if path == DEP and not state["read"]:
            state["read"] = True
            k.objects.pop(DEP, None)
        return got

    def apply(obj: Mapping[str, Any], field_manager: str) -> Applied:
        if path_of(obj) == DEP and DEP not in k.objects and "template" not in obj["spec"]:
            raise KubeError(422, "Invalid", "spec.selector: Required value")
        return real_apply(obj, field_manager)

    k.get = get  # type: ignore[method-assign]
    k.apply = apply  # type: ignore[method-assign]
    out = reconcile(k, Settings(), NS, "support")
    assert out.problem is None
    assert [e.reason for e in out.events] == ["Recreated"]
    assert k.objects[DEP]["spec"]["replicas"] == 3


def test_a_deployment_being_deleted_is_left_alone() -> None:
    k = _setup()
    reconcile(k, Settings(), NS, "support")
    k.objects[DEP]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    k.applies.clear()
    out = reconcile(k, Settings(), NS, "support")
    assert ("Deployment", FIELD_MANAGER) not in k.applies
    assert out.events == []


def test_failing_workers_are_a_warning_event_once_and_recovery_is_reported() -> None:
    k = _setup()
    reconcile(k, Settings(), NS, "support")
    crash = {
        "metadata": {"name": "support-abc"},
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
    }
    k.objects[DEP]["status"] = {"replicas": 1, "readyReplicas": 0, "updatedReplicas": 1}
    k.list = lambda path, label_selector: [crash]  # type: ignore[method-assign]
    out = reconcile(k, Settings(), NS, "support")
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "WorkersFailing")]
    assert "support-abc: CrashLoopBackOff" in out.events[0].message
    assert reconcile(k, Settings(), NS, "support").events == []  # not repeated
    k.objects[DEP]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    k.list = lambda path, label_selector: []  # type: ignore[method-assign]
    out = reconcile(k, Settings(), NS, "support")
    assert [(e.type, e.reason) for e in out.events] == [("Normal", "Recovered")]
