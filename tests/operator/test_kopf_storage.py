"""The lean diff-base storage builds exactly kopf's essence (kopf_storage.py)."""

from __future__ import annotations

import copy
from typing import Any, cast

import kopf
import pytest

from tests.operator.util import body, full_spec
from voicefleet_operator.handlers import ANNOTATION_PREFIX
from voicefleet_operator.kopf_storage import LeanDiffBaseStorage, lean_body

KEY = "last-handled-configuration"


def rich_body() -> dict[str, Any]:
    b = body(full_spec())
    b["metadata"] |= {
        "labels": {"team": "support"},
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            f"{ANNOTATION_PREFIX}/{KEY}": '{"spec": {}}',
            f"{ANNOTATION_PREFIX}/handler.progress": "{}",
            "example.com/owner": "support",
        },
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        "resourceVersion": "42",
        "finalizers": ["voicefleet.dev/kopf-finalizer"],
    }
    b["status"] = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}
    return b


def pod_body() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "w", "namespace": "voice", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "worker", "image": "i"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.2"},
    }


CASES = [
    ("a VoiceAgent with everything", rich_body(), []),
    ("a handler on spec", rich_body(), [("spec",)]),
    ("a handler on a status field", rich_body(), [("status", "phase")]),
    ("a handler on a status field (dotted)", rich_body(), ["status.phase"]),
    ("a handler on metadata", rich_body(), [("metadata", "resourceVersion")]),
    ("a pod", pod_body(), []),
    ("no metadata", {"spec": {"a": 1}}, []),
]


@pytest.mark.parametrize(("raw", "extra"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_essence_is_kopfs(raw: dict[str, Any], extra: list[Any]) -> None:
    before = copy.deepcopy(raw)
    theirs = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX, key=KEY)
    ours = LeanDiffBaseStorage(prefix=ANNOTATION_PREFIX, key=KEY)
    want = theirs.build(body=kopf.Body(cast(kopf.RawBody, raw)), extra_fields=extra)
    got = ours.build(body=kopf.Body(cast(kopf.RawBody, raw)), extra_fields=extra)
    assert got == want
    assert raw == before  # the body is not changed


def test_the_lean_body_holds_no_copy_of_what_is_dropped() -> None:
    raw = rich_body()
    lean = lean_body(raw, [])
    assert set(lean) == {"spec", "metadata"}
    assert set(lean["metadata"]) == {"labels", "annotations"}
    assert lean["spec"] is raw["spec"]  # no copy here; kopf's builder copies what it keeps
