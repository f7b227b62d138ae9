"""Random specs against the real API server: what it accepts, the operator renders into
objects the server accepts too (dry run), or reports as a typed SpecError; never a crash.

test_properties.py checks the render functions alone (JSON-serialisable, the worker's
loader accepts agent.json); this checks "valid" where it counts: the server's own
validation of a Deployment, ConfigMap, Service and PodDisruptionBudget.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kubernetes import client

from crdgen import crd_docs
from voicefleet_contract import GROUP, PLURAL, VERSION
from voicefleet_operator.render import Owner, render_children
from voicefleet_operator.settings import Settings
from voicefleet_operator.spec import SpecError, parse_spec
from voicefleet_testbed.kube import Kube

from .cluster import FAKE_IMAGE, OperatorProcess, voiceagent
from .test_properties import mutated_specs
from .util import full_spec

pytestmark = pytest.mark.cluster
SETTINGS = Settings(default_image=FAKE_IMAGE)


def _server_defaulted(kube: Kube, namespace: str, spec: Any) -> dict[str, Any] | None:
    """The spec as the API server stores it (validated, defaulted), or None if rejected."""
    try:
        created: Any = kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, voiceagent("prop", namespace, spec), dry_run="All"
        )
    except client.ApiException as e:
        rejected = e
    else:
        return dict(created["spec"])
    assert rejected.status in (400, 422), rejected.body  # a rejection, never a server error
    return None


def _dry_run_create(kube: Kube, obj: dict[str, Any]) -> None:
    body = copy.deepcopy(obj)
    body["metadata"].pop("ownerReferences")  # the owner does not exist in a dry run
    if body["kind"] == "Deployment":
        body["spec"]["replicas"] = 1
    res: Any = kube.dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    res.create(body=body, namespace=body["metadata"]["namespace"], dry_run="All")


@st.composite
def documented_combinations(draw: st.DrawFn) -> Any:
    """The full spec with a random set of docs/voiceagent.md's field examples put in: mostly
    valid specs, so the server accepts many and the render gets real combinations."""
    spec: Any = full_spec()
    paths = sorted(p for p in crd_docs.EXAMPLES if "[]" not in p)
    for path in draw(st.lists(st.sampled_from(paths), unique=True, max_size=10)):
        target = spec
        keys = path.split(".")[1:]
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = copy.deepcopy(crd_docs.EXAMPLES[path])
    return spec


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=st.one_of(mutated_specs(), documented_combinations()))
def test_what_the_server_accepts_renders_objects_the_server_accepts(
    operator: OperatorProcess, kube: Kube, namespace: str, spec: Any
) -> None:
    stored = _server_defaulted(kube, namespace, spec)
    if stored is None:
        event("rejected by the server")
        return
    try:
        parsed = parse_spec("prop", namespace, stored)
        children = render_children(parsed, Owner("prop", namespace, "uid"), SETTINGS)
    except SpecError as e:
        error: SpecError | None = e
    else:
        error = None
    if error is not None:
        # What the schema cannot judge (a label's syntax, a quantity): a typed, named error.
        assert error.field.startswith("spec") and error.message
        event("accepted by the server, a SpecError for the operator")
        return
    event("accepted and rendered")
    for obj in children.in_apply_order():
        try:
            _dry_run_create(kube, obj)
        except client.ApiException as e:
            raise AssertionError(f"{obj['kind']} rejected: {e.body}\nspec: {stored}") from None
