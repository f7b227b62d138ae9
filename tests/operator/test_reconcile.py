"""reconcile.py against a fake API: what is applied, when nothing is, what status says."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from voicefleet_operator.fleet import va_path
from voicefleet_operator.kube import Applied, KubeError, path_of
from voicefleet_operator.lookups import Lookups
from voicefleet_operator.names import Claim
from voicefleet_operator.reconcile import (
    needs_fresh_secrets,
    reconcile,
    refresh_status,
    secrets_hash,
    secrets_rotated,
    stale_autoscalers,
)
from voicefleet_operator.render import ANNOTATION_AUTOSCALING_MODE, ANNOTATION_SECRETS_HASH
from voicefleet_operator.settings import (
    FIELD_MANAGER,
    REPLICAS_FIELD_MANAGER,
    WORKER_KEYS_FIELD_MANAGER,
    Settings,
)
from voicefleet_operator.spec import SecretKeyRef

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
        self.calls: list[tuple[str, str]] = []  # (verb, path): every API call, in order

    def put(self, p: str, obj: dict[str, Any]) -> None:
        self.objects[p] = obj

    def get(self, path: str) -> dict[str, Any] | None:
        self.calls.append(("GET", path))
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        self.calls.append(("LIST", path))
        return []

    def apply(self, obj: Mapping[str, Any], field_manager: str) -> Applied:
        p = path_of(obj)
        self.calls.append(("APPLY", p))
        self.applies.append((obj["kind"], field_manager))
        current = self.objects.get(p)
        new = copy.deepcopy(dict(obj))
        if current is not None:
            merged = copy.deepcopy(current)
            merged.setdefault("spec", {}).update(new.get("spec", {}))
            new = {**merged, **{k: v for k, v in new.items() if k != "spec"}}
            new["spec"] = merged["spec"]
            if "data" in current:  # a Secret's keys merge too (only its own are applied)
                new["data"] = {**current["data"], **new.get("data", {})}
        old_meta = (current or {}).get("metadata", {})
        gen = old_meta.get("generation", 0)
        changed = current is None or current.get("spec") != new.get("spec")
        # Metadata merges as server-side apply keeps other managers' fields (a replicas-only
        # apply leaves the labels); uid and resourceVersion are the server's.
        new["metadata"] = {
            **old_meta,
            **new.get("metadata", {}),
            "generation": gen + 1 if changed else gen,
        }
        if current is None:
            self.uid += 1
            new["metadata"]["uid"] = f"uid-{self.uid}"
            if new["kind"] == "Deployment":
                new["spec"].setdefault("replicas", 1)  # the API server's default
        if new != current:
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[p] = new
        return Applied(copy.deepcopy(new), created=current is None)

    def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.status_patches += 1
        self.calls.append(("PATCH", f"{path}/status"))
        self.objects[path]["status"] = dict(status)
        return self.objects[path]

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError(f"the reconciler does not merge-patch ({path})")

    def delete(self, path: str, grace_seconds: int | None = None) -> None:
        self.calls.append(("DELETE", path))
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
    # The ConfigMap first (pods mount it), the Deployment as soon as it can be; what
    # the workers do not wait for after it.
    # One worker, the API server's default: no replicas in the apply, none to hand over.
    assert kinds == [
        ("Secret", WORKER_KEYS_FIELD_MANAGER),  # the worker-keys Secret, before any pod
        ("ConfigMap", FIELD_MANAGER),
        ("Deployment", FIELD_MANAGER),
        ("Service", FIELD_MANAGER),
        ("PodDisruptionBudget", FIELD_MANAGER),
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


def test_agent_name_conflict_renders_nothing_and_keeps_what_runs() -> None:
    """The second claimant of an agent name on a LiveKit server: a condition and one
    Warning, nothing applied; a fleet it ran before is left as it is; when the holder
    lets go, it renders."""
    holder = Claim("prod", "support", "http://livekit:7880", "support", "2025-01-01T00:00:00Z")
    answer: list[tuple[Claim | None, bool]] = [(holder, False)]
    asked: list[Claim] = []

    def names(me: Claim) -> tuple[Claim | None, bool]:
        asked.append(me)
        return answer[0]

    k = _setup()
    out = reconcile(k, Settings(), NS, "support", agent_names=names)
    assert k.applies == [] and out.problem is not None
    ready = _ready(out.status or {})
    assert ready["status"] == "False" and ready["reason"] == "AgentNameConflict"
    assert "prod/support" in ready["message"]
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "AgentNameConflict")]
    assert asked[0].namespace == NS and asked[0].agent_name == "support"
    assert reconcile(k, Settings(), NS, "support", agent_names=names).events == []
    # The holder lets go: it renders, and says the problem is over.
    answer[0] = (None, False)
    out = reconcile(k, Settings(), NS, "support", agent_names=names)
    assert [e.reason for e in out.events] == ["Resolved", "Created"] and out.ready is False
    applies = len(k.applies)
    # A conflict arising while it runs (both hold: it is the newer): nothing is changed.
    answer[0] = (replace(holder, holds=True), True)
    spec = minimal_spec()
    spec["model"]["instructions"] = "changed"
    k.objects[va_path(NS, "support")]["spec"] = spec
    k.objects[va_path(NS, "support")]["metadata"]["generation"] = 2
    out = reconcile(k, Settings(), NS, "support", agent_names=names)
    assert len(k.applies) == applies
    assert "left as they are" in _ready(out.status or {})["message"]


def _template(k: FakeKube) -> dict[str, Any]:
    dep = k.objects[f"/apis/apps/v1/namespaces/{NS}/deployments/support"]
    return dict(dep["spec"]["template"])


def test_rotating_a_key_rolls_the_workers_and_the_timer_notices() -> None:
    """The pod template carries a digest of the Secret values the workers use (never the
    values): a rotation changes it, with a SecretsChanged Event, and `secrets_rotated`
    (the timer's check) says so until it is applied. Keys no worker uses do not count."""
    k = _setup()
    lookups = Lookups.uncached()
    out = reconcile(k, Settings(), NS, "support", lookups=lookups)
    before = _template(k)["metadata"]["annotations"][ANNOTATION_SECRETS_HASH]
    assert len(before) == 16 and out.secrets is not None and out.secrets.hash == before
    assert not secrets_rotated(k, lookups, NS, out.secrets)
    # A key nobody uses changes: nothing to roll.
    k.objects[f"/api/v1/namespaces/{NS}/secrets/openai"]["data"]["unused"] = "eA=="
    assert not secrets_rotated(k, lookups, NS, out.secrets)
    # The OpenAI key is rotated.
    k.objects[f"/api/v1/namespaces/{NS}/secrets/openai"]["data"]["apiKey"] = "c2stbmV3"
    assert secrets_rotated(k, lookups, NS, out.secrets)
    again = reconcile(k, Settings(), NS, "support", lookups=lookups)
    after = _template(k)["metadata"]["annotations"][ANNOTATION_SECRETS_HASH]
    assert after != before and "c2stbmV3" not in after
    assert [e.reason for e in again.events] == ["SecretsChanged"]
    assert again.secrets is not None
    assert not secrets_rotated(k, lookups, NS, again.secrets)
    # Nothing changed: nothing applied anew, no Event.
    assert reconcile(k, Settings(), NS, "support", lookups=lookups).events == []


def test_secrets_hash_is_keyed_and_hides_values() -> None:
    ref = SecretKeyRef("openai", "apiKey")
    digest = hashlib.sha256(b"c2stMTIz").hexdigest()
    a, b = secrets_hash("uid-a", {ref: digest}), secrets_hash("uid-b", {ref: digest})
    assert a != b and len(a) == 16 and a not in digest  # equal values do not look equal
    assert secrets_hash("uid-a", {ref: digest}) == a  # stable: no roll without a change


def test_tool_header_secrets_are_checked_and_rendered_as_secret_env() -> None:
    spec = minimal_spec()
    spec["tools"] = [
        {
            "name": "lookup",
            "description": "d",
            "url": "http://orders.svc/x",
            "headers": [
                {
                    "name": "Authorization",
                    "valueFrom": {"secretKeyRef": {"name": "tools", "key": "token"}},
                }
            ],
        }
    ]
    k = _setup(spec)
    out = reconcile(k, Settings(), NS, "support")
    ready = _ready(out.status or {})
    assert ready["reason"] == "SecretNotFound" and k.applies == []
    assert "spec.tools[0].headers[0].valueFrom.secretKeyRef.name" in ready["message"]
    k.put(f"/api/v1/namespaces/{NS}/secrets/tools", {"data": {"other": "eA=="}})
    ready = _ready(reconcile(k, Settings(), NS, "support").status or {})
    assert ready["reason"] == "SecretKeyMissing"
    assert "spec.tools[0].headers[0].valueFrom.secretKeyRef.key" in ready["message"]
    k.put(f"/api/v1/namespaces/{NS}/secrets/tools", {"data": {"token": "QmVhcmVyIHg="}})
    reconcile(k, Settings(), NS, "support")
    env = {e["name"]: e for e in _template(k)["spec"]["containers"][0]["env"]}
    assert env["VOICEFLEET_TOOL_0_HEADER_0"] == {
        "name": "VOICEFLEET_TOOL_0_HEADER_0",
        "valueFrom": {"secretKeyRef": {"name": "tools", "key": "token"}},
    }
    cm = k.objects[f"/api/v1/namespaces/{NS}/configmaps/support-config"]
    assert "QmVhcmVyIHg=" not in json.dumps(cm) and "Bearer" not in json.dumps(cm)
    assert '"env":"VOICEFLEET_TOOL_0_HEADER_0"' in cm["data"]["agent.json"]


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
    assert ("Deployment", REPLICAS_FIELD_MANAGER) in k.applies  # seeded at creation
    assert k.applies[-1] == ("HorizontalPodAutoscaler", FIELD_MANAGER)
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


# --- API calls per reconcile, shared lookups, autoscaler clean-up ------------------------
SECRET_LK = f"/api/v1/namespaces/{NS}/secrets/livekit"
SECRET_OAI = f"/api/v1/namespaces/{NS}/secrets/openai"
HPA = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/support"
SO = f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/support"


def _verbs(k: FakeKube) -> list[tuple[str, str]]:
    """The calls as (verb, last path segment), for readable comparisons."""
    return [(verb, p.rstrip("/").split("/")[-1]) for verb, p in k.calls]


def test_create_path_calls_deployment_fourth_and_no_cleanup() -> None:
    k = _setup()
    reconcile(k, Settings(), NS, "support")
    assert _verbs(k) == [
        ("GET", "support"),  # the VoiceAgent
        ("GET", "support"),  # the Deployment: 404
        ("GET", "livekit"),  # Secrets (uncached here; shared Lookups in the operator)
        ("GET", "openai"),
        ("GET", "support-worker-keys"),  # 404: created, before anything starts pods
        ("APPLY", "support-worker-keys"),
        ("APPLY", "support-config"),
        ("APPLY", "support"),  # the Deployment
        ("APPLY", "support-workers"),
        ("APPLY", "support"),  # the PDB
        ("PATCH", "status"),
    ]  # no DELETE of an HPA or ScaledObject that never was, no pod LIST (no pods yet)


KEYS = f"/api/v1/namespaces/{NS}/secrets/support-worker-keys"


def test_worker_keys_are_created_once_and_never_replaced() -> None:
    k = _setup()
    out = reconcile(k, Settings(), NS, "support")
    assert "Secret support-worker-keys" in out.events[0].message
    secret = k.objects[KEYS]
    data = dict(secret["data"])
    assert set(data) == {"resumeKey", "sessionsToken"}
    assert data["resumeKey"] != data["sessionsToken"]
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "VoiceAgent"  # GC'd with it
    # a spec change and a resync look again, and keep what is there
    k.objects[va_path(NS, "support")]["metadata"]["generation"] = 2
    reconcile(k, Settings(), NS, "support")
    reconcile(k, Settings(), NS, "support", thorough=True)
    assert k.objects[KEYS]["data"] == data
    # deleted by hand: the resync makes a new one (pods that start need it)
    del k.objects[KEYS]
    reconcile(k, Settings(), NS, "support", thorough=True)
    assert set(k.objects[KEYS]["data"]) == {"resumeKey", "sessionsToken"}
    assert k.objects[KEYS]["data"]["resumeKey"] != data["resumeKey"]


def test_a_users_worker_keys_secret_only_gets_the_missing_key() -> None:
    k = _setup()
    k.put(KEYS, {"metadata": {"name": "support-worker-keys"}, "data": {"resumeKey": "bXk="}})
    reconcile(k, Settings(), NS, "support")
    applied = k.objects[KEYS]
    assert applied["data"]["resumeKey"] == "bXk="  # the user's, kept
    assert applied["data"]["sessionsToken"]
    assert "ownerReferences" not in applied["metadata"]  # it stays theirs


def test_steady_state_calls() -> None:
    k = _setup()
    lookups = Lookups.cached()
    reconcile(k, Settings(), NS, "support", lookups=lookups)
    k.calls.clear()
    reconcile(k, Settings(), NS, "support", lookups=lookups)
    assert [v for v, _ in k.calls] == ["GET", "GET", "APPLY", "APPLY", "APPLY", "APPLY"]


def test_shared_secret_is_read_once_for_many_voiceagents() -> None:
    k = _setup()
    for i in range(20):
        k.put(va_path(NS, f"va{i}"), body(minimal_spec(), name=f"va{i}", namespace=NS))
    lookups = Lookups.cached(clock=lambda: 100.0)
    for i in range(20):
        out = reconcile(k, Settings(), NS, f"va{i}", lookups=lookups)
        assert out.problem is None
    # (each VoiceAgent's own worker-keys Secret is read when it is made)
    reads = [p for v, p in k.calls if v == "GET" and "/secrets/" in p and "-keys" not in p]
    assert sorted(reads) == [SECRET_LK, SECRET_OAI]


def test_a_secret_deleted_before_an_edit_blocks_it_despite_the_shared_answer() -> None:
    """An edit of a running fleet reads the Secrets now: the shared answer, seconds old,
    may not know of a deletion, and the edit would roll pods that cannot start."""
    k = _setup()
    lookups = Lookups.cached(clock=lambda: 100.0)  # answers never expire here
    reconcile(k, Settings(), NS, "support", lookups=lookups)
    del k.objects[SECRET_OAI]
    # Nothing changed: a re-apply of what runs may trust the shared answer.
    assert reconcile(k, Settings(), NS, "support", lookups=lookups).problem is None
    va = k.objects[va_path(NS, "support")]
    va["spec"]["model"]["instructions"] = "v2"
    va["metadata"]["generation"] = 2
    applies = len(k.applies)
    out = reconcile(k, Settings(), NS, "support", lookups=lookups)
    assert out.problem is not None and out.problem.reason == "SecretNotFound"
    assert len(k.applies) == applies


@pytest.mark.parametrize(
    ("previous", "generation", "fresh"),
    [
        ({}, 1, False),  # never applied: nothing runs
        ({"observedGeneration": 1}, 1, False),  # blocked before its first apply
        ({"configHash": "h", "observedGeneration": 1}, 1, False),  # a re-apply
        ({"configHash": "h", "observedGeneration": 1}, 2, True),  # an edit
        (
            {
                "configHash": "h",
                "observedGeneration": 2,
                "conditions": [{"type": "Ready", "status": "False", "reason": "SecretNotFound"}],
            },
            2,
            True,  # an edit still waiting for its Secret
        ),
    ],
)
def test_needs_fresh_secrets(previous: dict[str, Any], generation: int, fresh: bool) -> None:
    assert needs_fresh_secrets(previous, generation) is fresh


def _dep(mode: str | None) -> dict[str, Any]:
    annotations = {ANNOTATION_AUTOSCALING_MODE: mode} if mode else {}
    return {"metadata": {"annotations": annotations}}


@pytest.mark.parametrize(
    ("mode", "current", "previous", "thorough", "stale"),
    [
        ("builtin", None, {}, False, ()),  # never applied
        ("builtin", None, {"configHash": "h"}, False, ("hpa", "keda")),  # deleted by hand
        ("builtin", _dep("builtin"), {"configHash": "h"}, False, ()),  # the same mode
        ("builtin", _dep("hpa"), {"configHash": "h"}, False, ("hpa",)),  # hpa -> builtin
        ("hpa", _dep("keda"), {"configHash": "h"}, False, ("keda",)),  # keda -> hpa
        ("keda", _dep("keda"), {"configHash": "h"}, False, ()),
        ("none", _dep(None), {"configHash": "h"}, False, ("hpa", "keda")),  # an older operator
        ("hpa", _dep("hpa"), {"configHash": "h"}, True, ("keda",)),  # the periodic backstop
    ],
)
def test_stale_autoscalers(
    mode: str,
    current: dict[str, Any] | None,
    previous: dict[str, Any],
    thorough: bool,
    stale: tuple[str, ...],
) -> None:
    assert stale_autoscalers(mode, current, previous, thorough=thorough) == stale


def test_mode_switches_remove_the_old_autoscaler_and_only_then() -> None:
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "keda", "minReplicas": 0, "maxReplicas": 5}
    k = _setup(spec)
    k.put("/apis/keda.sh/v1alpha1", {"kind": "APIResourceList"})
    reconcile(k, Settings(), NS, "support")
    assert SO in k.objects and k.deleted == []
    va = k.objects[va_path(NS, "support")]
    # keda -> hpa: the ScaledObject goes before the Deployment changes mode.
    va["spec"]["autoscaling"] = {"mode": "hpa", "minReplicas": 1, "maxReplicas": 5}
    reconcile(k, Settings(), NS, "support")
    assert k.deleted == [SO] and HPA in k.objects
    dep = k.objects[DEP]
    assert dep["metadata"]["annotations"][ANNOTATION_AUTOSCALING_MODE] == "hpa"
    # hpa, unchanged: nothing deleted.
    reconcile(k, Settings(), NS, "support")
    assert k.deleted == [SO]
    # hpa -> none: the HPA goes; then nothing more.
    va["spec"]["autoscaling"] = {"mode": "none"}
    reconcile(k, Settings(), NS, "support")
    assert k.deleted == [SO, HPA] and HPA not in k.objects
    reconcile(k, Settings(), NS, "support")
    assert k.deleted == [SO, HPA]


def test_a_failed_delete_is_retried_because_the_mode_was_not_recorded_yet() -> None:
    """The old mode's object is deleted before the Deployment records the new mode: a
    reconcile that fails in between leaves the old mode on the Deployment, so the retry
    deletes again."""
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "hpa", "minReplicas": 1, "maxReplicas": 5}
    k = _setup(spec)
    reconcile(k, Settings(), NS, "support")
    k.objects[va_path(NS, "support")]["spec"]["autoscaling"] = {"mode": "builtin"}
    real_delete = k.delete

    def unavailable(path: str, grace_seconds: int | None = None) -> None:
        raise KubeError(503, "ServiceUnavailable", "etcd")

    k.delete = unavailable  # type: ignore[method-assign]
    with pytest.raises(KubeError):
        reconcile(k, Settings(), NS, "support")
    assert k.objects[DEP]["metadata"]["annotations"][ANNOTATION_AUTOSCALING_MODE] == "hpa"
    k.delete = real_delete  # type: ignore[method-assign]
    reconcile(k, Settings(), NS, "support")
    assert HPA in k.deleted


def test_keda_discovery_is_shared_and_not_asked_without_need() -> None:
    k = _setup()
    lookups = Lookups.cached(clock=lambda: 100.0)
    reconcile(k, Settings(), NS, "support", lookups=lookups)
    assert ("GET", "/apis/keda.sh/v1alpha1") not in k.calls  # builtin, nothing to clean up
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "keda", "minReplicas": 0, "maxReplicas": 5}
    for i in range(3):
        k.put(va_path(NS, f"k{i}"), body(spec, name=f"k{i}", namespace=NS))
        reconcile(k, Settings(), NS, f"k{i}", lookups=lookups)
    assert k.calls.count(("GET", "/apis/keda.sh/v1alpha1")) == 1


# --- status refresh -----------------------------------------------------------------
def test_refresh_status_follows_the_deployment_without_applying() -> None:
    k = _setup()
    out = reconcile(k, Settings(), NS, "support")
    assert out.marks is not None
    k.objects[DEP]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    k.objects[DEP]["status"]["observedGeneration"] = k.objects[DEP]["metadata"]["generation"]
    k.calls.clear()
    refreshed = refresh_status(k, NS, "support", out.marks, copy.deepcopy(k.objects[DEP]))
    assert refreshed is not None and refreshed.ready
    assert [v for v, _ in k.calls] == ["GET", "PATCH"]  # the VoiceAgent, its status
    assert k.objects[va_path(NS, "support")]["status"]["configHash"] == out.marks.config_hash
    # Nothing new: no write.
    k.calls.clear()
    assert refresh_status(k, NS, "support", out.marks) is not None
    assert [v for v, _ in k.calls] == ["GET", "GET"]


def test_refresh_status_is_not_enough_after_an_edit_or_drift() -> None:
    k = _setup()
    out = reconcile(k, Settings(), NS, "support")
    assert out.marks is not None
    applies = len(k.applies)
    drifted = copy.deepcopy(k.objects[DEP])
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"  # by hand
    drifted["metadata"]["generation"] += 1
    assert refresh_status(k, NS, "support", out.marks, drifted) is None
    relabelled = copy.deepcopy(k.objects[DEP])
    del relabelled["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert refresh_status(k, NS, "support", out.marks, relabelled) is None
    k.objects[va_path(NS, "support")]["metadata"]["generation"] = 2  # the spec changed
    assert refresh_status(k, NS, "support", out.marks) is None
    assert len(k.applies) == applies  # it never applies: the full reconcile does


def test_a_blocked_reconcile_leaves_no_marks() -> None:
    k = _setup(secrets=False)
    assert reconcile(k, Settings(), NS, "support").marks is None


def test_refresh_status_after_a_scale_checks_the_modes_replicas() -> None:
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "builtin", "minReplicas": 1, "maxReplicas": 3}
    k = _setup(spec)
    out = reconcile(k, Settings(), NS, "support")
    assert out.marks is not None
    scaled = copy.deepcopy(k.objects[DEP])
    scaled["spec"]["replicas"] = 3  # the autoscaler, within bounds
    scaled["metadata"]["generation"] += 1
    refreshed = refresh_status(k, NS, "support", out.marks, scaled)
    assert refreshed is not None and (refreshed.status or {})["desiredReplicas"] == 3
    scaled["spec"]["replicas"] = 9  # out of bounds: a full reconcile clamps it
    assert refresh_status(k, NS, "support", out.marks, scaled) is None
    # Mode none: the operator owns replicas; a scale of the Deployment is reverted.
    k.objects[va_path(NS, "support")]["spec"]["autoscaling"] = {"mode": "none"}
    none = reconcile(k, Settings(), NS, "support")
    assert none.marks is not None
    scaled = copy.deepcopy(k.objects[DEP])
    scaled["spec"]["replicas"] = 2
    scaled["metadata"]["generation"] += 1
    assert refresh_status(k, NS, "support", none.marks, scaled) is None


def test_initial_replicas_other_than_one_are_handed_to_the_replicas_manager() -> None:
    """The main apply that creates the Deployment carries them (it must not start at 1);
    the replicas manager takes them over and the main manager lets go at once, or its
    next apply (an operator restart's resume) would write managedFields alone."""
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "builtin", "minReplicas": 3, "maxReplicas": 5}
    k = _setup(spec)
    reconcile(k, Settings(), NS, "support")
    assert [a for a in k.applies if a[0] == "Deployment"] == [
        ("Deployment", FIELD_MANAGER),
        ("Deployment", REPLICAS_FIELD_MANAGER),
        ("Deployment", FIELD_MANAGER),
    ]
    assert k.objects[DEP]["spec"]["replicas"] == 3
    # Mode none: the reconciler applies replicas on every reconcile; its replicas manager
    # claims even the default at creation, so the next reconcile writes nothing.
    spec = minimal_spec()
    spec["autoscaling"] = {"mode": "none"}
    k = _setup(spec)
    reconcile(k, Settings(), NS, "support")
    assert [a for a in k.applies if a[0] == "Deployment"] == [
        ("Deployment", FIELD_MANAGER),
        ("Deployment", REPLICAS_FIELD_MANAGER),
    ]


INGRESS = ({"from": [{"podSelector": {"matchLabels": {"app": "x"}}}],
            "ports": [{"port": "metrics", "protocol": "TCP"}]},)  # fmt: skip
NP_PATH = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/support"


def test_a_network_policy_per_voiceagent_with_worker_ingress_and_gone_without() -> None:
    """With --worker-ingress the workers get a NetworkPolicy (after the Deployment: a
    policy never delays the workers); without, the periodic resync removes the one the
    operator rendered, and never a user's of the same name."""
    k = _setup()
    reconcile(k, Settings(worker_ingress=INGRESS), NS, "support")
    assert [kind for kind, _ in k.applies][-1] == "NetworkPolicy"
    pol = k.objects[NP_PATH]
    assert pol["spec"]["ingress"] == list(INGRESS)
    assert pol["metadata"]["ownerReferences"][0]["kind"] == "VoiceAgent"
    reconcile(k, Settings(), NS, "support")  # not a resync: no read, no delete
    assert NP_PATH in k.objects and ("GET", NP_PATH) not in k.calls
    reconcile(k, Settings(), NS, "support", thorough=True)
    assert NP_PATH not in k.objects
    # A user's own NetworkPolicy of that name is not ours to delete.
    k.put(NP_PATH, {"kind": "NetworkPolicy", "metadata": {"name": "support", "labels": {}}})
    reconcile(k, Settings(), NS, "support", thorough=True)
    assert NP_PATH in k.objects


def test_without_rbac_for_network_policies_the_resync_goes_on() -> None:
    """An operator without --worker-ingress may run under RBAC that has no NetworkPolicy
    rules (an older chart's, or a user's): the resync's check for one to remove is
    forbidden, and that is not a failed reconcile."""

    class NoPolicies(FakeKube):
        def get(self, path: str) -> dict[str, Any] | None:
            if "/networkpolicies/" in path:
                raise KubeError(403, "Forbidden", "cannot get networkpolicies")
            return super().get(path)

    k = NoPolicies()
    k.objects = _setup().objects
    out = reconcile(k, Settings(), NS, "support", thorough=True)
    assert out.status is not None
    assert (
        _ready(out.status)["reason"]
        == _ready(reconcile(_setup(), Settings(), NS, "support").status or {})["reason"]
    )
    assert ("DELETE", NP_PATH) not in k.calls
