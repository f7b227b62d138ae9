"""The CRDs upgrade with the chart (they are templates, not the crds/ folder Helm installs
once), and uninstalling the chart keeps them (and every VoiceAgent): a release of the chart
from before `spec.template.volumes` and friends is installed into the testbed, then
upgraded to this chart, against the real API server."""

from __future__ import annotations

import copy
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from voicefleet_contract import GROUP, PLURAL, VERSION
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.operator_proc import CRD_NAME
from voicefleet_testbed.stack import Stack
from voicefleet_testbed.user_install import helm as stack_helm

from ..operator.cluster import voiceagent
from ..operator.util import minimal_spec
from .chart import CHART
from .test_install import _namespace

pytestmark = pytest.mark.cluster
NEW_FIELDS = ("volumes", "volumeMounts", "initContainers", "containers")


def _template_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return dict(props["template"])


def _as_it_was(kube: Kube, crd: dict[str, Any]) -> None:
    """Replace (PUT) the cluster's VoiceAgent CRD with `crd`: the cluster as the older
    release left it. An apply would not do: fields that another field manager applied
    (the session's tests, an earlier install) would stay."""
    res = kube.dynamic.resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    current = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
    body = copy.deepcopy(crd)
    if current is not None:
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        kube.dynamic.replace(res, body=body)
    else:
        kube.dynamic.create(res, body=body)


def _older_chart(tmp_path: Path) -> Path:
    """This chart as it was before the template's volumes and containers (version 0.0.1)."""
    old = tmp_path / "voicefleet"
    shutil.copytree(CHART, old, symlinks=False)  # files/ links become files
    crd_file = old / "files" / "crds" / "voiceagent.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    template = _template_schema(crd)
    for f in NEW_FIELDS:
        template["properties"].pop(f)
    template.pop("x-kubernetes-validations", None)  # its rules are about those fields
    (version,) = crd["spec"]["versions"]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"] = template
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    chart = yaml.safe_load((old / "Chart.yaml").read_text())
    chart["version"] = "0.0.1"
    (old / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
    return old


def _accepts_volumes(kube: Kube, ns: str) -> bool:
    """A VoiceAgent with spec.template.volumes, created with dryRun: does the schema know
    the field? (Strict: an unknown field is an error, as kubectl sends it.)"""
    s = copy.deepcopy(minimal_spec())
    s["template"] = {"volumes": [{"name": "ca", "configMap": {"name": "ca"}}]}
    try:
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, voiceagent("probe", ns, s),
            dry_run="All", field_validation="Strict",
        )  # fmt: skip
    except client.ApiException as e:
        if e.status == 400 and "volumes" in str(e.body):
            return False
        raise
    return True


def test_helm_upgrade_upgrades_the_crd_and_uninstall_keeps_it(
    stack: Stack, kube: Kube, tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:5]
    release, system_ns, ns = f"crd-{uid}", f"crd-system-{uid}", f"crd-voice-{uid}"
    _namespace(kube, system_ns)
    _namespace(kube, ns)
    # The operator this installs watches only an empty namespace of its own. The CRD was
    # applied by others before (the session's tests, as `kubectl apply --server-side` of an
    # older chart's crds/ would): taken over, as docs/operations.md says for that upgrade.
    common = ["--namespace", system_ns, "--set", f"watchNamespaces[0]={ns}",
              "--take-ownership", "--force-conflicts"]  # fmt: skip
    try:
        older = _older_chart(tmp_path)
        _as_it_was(kube, yaml.safe_load((older / "files" / "crds" / "voiceagent.yaml").read_text()))
        out = stack_helm(stack, "install", release, str(older), *common)
        assert out.returncode == 0, out.stdout + out.stderr
        crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
        assert crd is not None
        assert not set(NEW_FIELDS) & set(_template_schema(crd)["properties"])
        assert not _accepts_volumes(kube, ns)

        out = stack_helm(stack, "upgrade", release, str(CHART), *common)
        assert out.returncode == 0, out.stdout + out.stderr
        crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
        assert crd is not None
        assert set(NEW_FIELDS) <= set(_template_schema(crd)["properties"])
        assert _accepts_volumes(kube, ns)
    finally:
        stack_helm(stack, "uninstall", release, "--namespace", system_ns)
        for n in (ns, system_ns):
            kube.core.delete_namespace(n)
    # Kept: uninstalling the chart must not delete every VoiceAgent in the cluster.
    crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
    assert crd is not None and "deletionTimestamp" not in crd["metadata"]
    assert set(NEW_FIELDS) <= set(_template_schema(crd)["properties"])
