"""Random specs through parse + render: valid objects or a SpecError, never a crash."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicefleet_contract.config import parse_config
from voicefleet_operator.render import Owner, render_children
from voicefleet_operator.settings import Settings
from voicefleet_operator.spec import SpecError, parse_spec

from .util import full_spec, minimal_spec

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        ["audio", "text", "server_vad", "semantic_vad", "hpa", "none", "ws://x", "50%"]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    """A valid spec with a few values replaced by random JSON, or keys dropped."""
    spec: Any = draw(st.sampled_from([minimal_spec, full_spec]))()
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(spec)
        target = draw(st.sampled_from(paths))
        if not target:
            spec = draw(json_value) if draw(st.booleans()) else spec
            continue
        parent = spec
        for key in target[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent.pop(target[-1], None)
        else:
            parent[target[-1]] = draw(json_value)
    return spec


def _check(name: str, spec: Any) -> None:
    try:
        parsed = parse_spec(name, "voice", spec)
        children = render_children(parsed, Owner(name, "voice", "u"), Settings())
    except SpecError as e:
        error: SpecError | None = e
    else:
        error = None
    if error is not None:
        assert error.field.startswith(("spec", "metadata")) and error.message
        return
    # Rendered: JSON-serialisable, and the worker accepts its config.
    for obj in children.in_apply_order():
        json.dumps(obj)
    assert parse_config(json.loads(children.configmap["data"]["agent.json"])) == parsed.config


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutated_specs_render_or_raise_spec_error(spec: Any) -> None:
    _check("support", spec)


@settings(max_examples=150, deadline=None)
@given(json_value, st.text(max_size=70))
def test_arbitrary_json_renders_or_raises_spec_error(spec: Any, name: str) -> None:
    _check(name, spec)
