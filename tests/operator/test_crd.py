"""The CRD: generated file up to date, documented, defaults agree with spec.py and the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from crdgen import crd
from voicefleet_contract.fields import MAX_INSTRUCTIONS
from voicefleet_operator.spec import parse_spec

from .util import full_spec, minimal_spec

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_yaml_is_generated_from_crd_py() -> None:
    on_disk = (REPO / "crds" / "voiceagent.yaml").read_text()
    assert on_disk == crd.render_yaml(), "run: python -m crdgen > crds/voiceagent.yaml"
    assert yaml.safe_load(on_disk) == crd.build_crd()


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for key, sub in schema.get("properties", {}).items():
        out += _walk(sub, f"{path}.{key}")
    if "items" in schema:
        out += _walk(schema["items"], f"{path}[]")
    return out


def test_every_field_has_a_description() -> None:
    missing = [
        p
        for p, s in _walk(crd.openapi_schema(), "")
        if not s.get("description") and p != ".metadata"  # the server forbids one there
    ]
    assert missing == []


def test_strings_are_capped_where_users_write_them() -> None:
    spec = crd.openapi_schema()["properties"]["spec"]
    uncapped = [
        p
        for p, s in _walk(spec, "spec")
        if s.get("type") == "string" and "maxLength" not in s and "enum" not in s
    ]
    assert uncapped == []
    model = spec["properties"]["model"]["properties"]
    assert model["instructions"]["maxLength"] == MAX_INSTRUCTIONS


def test_crd_defaults_are_the_ones_spec_py_assumes() -> None:
    schema = crd.openapi_schema()["properties"]["spec"]
    for raw in (minimal_spec(), full_spec()):
        defaulted = crd.apply_defaults(schema, raw)
        assert defaulted != raw  # the schema does fill something
        assert parse_spec("support", "voice", defaulted) == parse_spec("support", "voice", raw)


def test_subresources_and_columns() -> None:
    version = crd.build_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:3] == ["Agent", "Ready", "Sessions"] and names[-1] == "Age"
    assert crd.build_crd()["spec"]["names"]["shortNames"] == ["va"]


def test_cel_rules_carry_messages() -> None:
    for path, s in _walk(crd.openapi_schema(), ""):
        for r in s.get("x-kubernetes-validations", []):
            assert r.get("message") or r.get("messageExpression"), path
