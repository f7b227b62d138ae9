"""docs/voiceagent.md is generated from crd.py's schema, and examples/voiceagent.yaml is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from crdgen import crd, crd_docs
from voicefleet_contract import API_VERSION, KIND
from voicefleet_operator.render import Owner, render_children
from voicefleet_operator.settings import Settings
from voicefleet_operator.spec import parse_spec

from ..pod_security import restricted_violations

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_reference_is_generated_from_crd_py() -> None:
    on_disk = (REPO / "docs" / "voiceagent.md").read_text()
    assert on_disk == crd_docs.render(crd.build_crd()), (
        "run: .venv/bin/python -m crdgen --docs > docs/voiceagent.md"
    )


def test_every_spec_field_is_documented_with_an_example() -> None:
    doc = (REPO / "docs" / "voiceagent.md").read_text()
    paths = crd_docs.documented_paths(crd.build_crd())
    assert len(paths) > 60
    missing = [
        p for p, s, _ in paths if crd_docs.example_of(p, s) is None and "properties" not in s
    ]
    assert missing == []
    for p, s, _ in paths:
        assert f"`{p.rsplit('.', 1)[1]}`" in doc, p
        assert " ".join(s["description"].split())[:40] in doc.replace("\\|", "|"), p


def test_examples_name_real_fields() -> None:
    known = {p for p, _, _ in crd_docs.documented_paths(crd.build_crd())}
    assert set(crd_docs.EXAMPLES) - known == set()


def test_field_examples_are_valid_values() -> None:
    """Each example, put into a minimal spec on its own, passes the operator's checks."""
    from .util import minimal_spec

    schema = crd.openapi_schema()["properties"]["spec"]
    # Examples that refer to another field's: put in together.
    together = {"spec.template.volumeMounts": ["spec.template.volumes"]}
    inbound, outbound = "spec.telephony.inbound.numbers", "spec.telephony.outbound.numbers"
    # telephony needs an inbound trunk, an outbound trunk its address and numbers
    for p in crd_docs.EXAMPLES:
        if p.startswith("spec.telephony.") and p != inbound:
            together[p] = [inbound]
        if p.startswith("spec.telephony.outbound."):
            needed = [outbound, "spec.telephony.outbound.address"]
            together[p] = [inbound, *(n for n in needed if n != p)]
    together["spec.telephony.dispatch.roomName"] = [inbound, "spec.telephony.dispatch.type"]
    together["spec.telephony.dispatch.type"] = [inbound, "spec.telephony.dispatch.roomName"]
    for p in crd_docs.EXAMPLES:
        if "[]" in p.rsplit(".", 1)[0] or p.endswith("]"):
            continue  # an item's field: covered by the whole list's example
        spec: dict[str, Any] = minimal_spec()
        for path in [*together.get(p, []), p]:
            keys = path.split(".")[1:]
            target = spec
            for k in keys[:-1]:
                target = target.setdefault(k, {})
            target[keys[-1]] = crd_docs.EXAMPLES[path]
        parsed = parse_spec("support", "voice", crd.apply_defaults(schema, spec))
        render_children(parsed, Owner("support", "voice", "u"), Settings())


def test_the_example_file_is_a_valid_voiceagent_with_its_secrets() -> None:
    docs = list(yaml.safe_load_all((REPO / crd_docs.EXAMPLE_FILE).read_text()))
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    (va,) = [d for d in docs if d["kind"] == KIND]
    assert va["apiVersion"] == API_VERSION
    assert all("namespace" not in d["metadata"] for d in docs)  # kubectl -n decides
    schema = crd.openapi_schema()["properties"]["spec"]
    spec = parse_spec(va["metadata"]["name"], "default", crd.apply_defaults(schema, va["spec"]))
    lk = secrets[spec.livekit.credentialsSecret]["stringData"]
    assert lk[spec.livekit.apiKeyKey] == "devkey"
    assert len(lk[spec.livekit.apiSecretKey]) >= 32  # livekit-server refuses shorter secrets
    assert (
        spec.apiKeySecret and spec.apiKeySecret.key in secrets[spec.apiKeySecret.name]["stringData"]
    )


def test_the_private_ca_example_is_valid_and_restricted() -> None:
    """examples/livekit-private-ca.yaml parses, renders a pod that passes Pod Security
    `restricted`, and points SSL_CERT_FILE at the bundle its init container writes."""
    (va,) = yaml.safe_load_all((REPO / "examples" / "livekit-private-ca.yaml").read_text())
    assert va["kind"] == KIND and va["apiVersion"] == API_VERSION
    schema = crd.openapi_schema()["properties"]["spec"]
    spec = parse_spec(va["metadata"]["name"], "voice", crd.apply_defaults(schema, va["spec"]))
    pod = render_children(spec, Owner("x", "voice", "u"), Settings()).deployment["spec"]
    pod = pod["template"]["spec"]
    assert restricted_violations(pod) == []
    (init,) = pod["initContainers"]
    written = init["command"][-1].rsplit("> ", 1)[1]  # /ca-bundle/ca.crt
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    init_mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    volume = init_mounts[written.rsplit("/", 1)[0]]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SSL_CERT_FILE"] == f"{mounts[volume]}/{written.rsplit('/', 1)[1]}"
