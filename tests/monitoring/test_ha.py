"""HA mode installed into the testbed: two operator replicas under kopf peering (the
chart's KopfPeering and CRDs, the operator's --peering from the chart's env); both run,
both record themselves in the peering object, and the VoiceAgent still becomes Ready."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from voicefleet_contract import LABEL_NAME
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from ..operator.cluster import FAKE_IMAGE, install_images, secrets, voiceagent, wait_for
from .chart import CHART
from .test_install import _helm, _namespace, _operator_log, _ready, _worker_spec

pytestmark = pytest.mark.cluster


def _ready_operators(kube: Kube, ns: str) -> list[dict[str, Any]]:
    out = []
    for p in kube.list("v1", "Pod", ns):
        if p["metadata"].get("labels", {}).get(LABEL_NAME) != "voicefleet-operator":
            continue
        conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions") or []}
        if conds.get("Ready") == "True":
            out.append(p)
    return out


def test_two_replicas_peer_and_reconcile(stack: Stack, kube: Kube) -> None:
    install_images(stack)
    uid = uuid.uuid4().hex[:5]
    release, system_ns, ns = f"ha-{uid}", f"ha-system-{uid}", f"ha-voice-{uid}"
    _namespace(kube, system_ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    _namespace(kube, ns)
    out = _helm(
        stack,
        "install", release, str(CHART),
        "--namespace", system_ns,
        "--set", "replicaCount=2",
        "--set", f"watchNamespaces[0]={ns}",
        "--set", f"worker.image.repository={FAKE_IMAGE.rsplit(':', 1)[0]}",
        "--set-string", f"worker.image.tag={FAKE_IMAGE.rsplit(':', 1)[1]}",
        "--set", "operator.logFormat=text",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    fullname = f"{release}-voicefleet"
    try:
        wait_for(lambda: len(_ready_operators(kube, system_ns)) == 2, 120, "two operators Ready")

        def peers() -> dict[str, Any] | None:
            obj = kube.get("kopf.dev/v1", "KopfPeering", fullname, ns)
            status = (obj or {}).get("status") or {}
            return status if len(status) == 2 else None

        status = wait_for(peers, 60, "both replicas in the KopfPeering")
        assert len({v["priority"] for v in status.values()}) == 2, status
        secrets(kube, ns)
        kube.create(voiceagent("support", ns, _worker_spec()))
        wait_for(lambda: _ready(kube, ns, "support"), 120, "VoiceAgent Ready")
        # One replica is active: distinct priorities (above), and kopf never found two at
        # the same one. (Whether the lower one logs "Pausing operations" depends on whether it
        # started paused, so that line is not a property to assert.)
        logs = _operator_log(stack, system_ns)
        assert "Possibly conflicting operators with the same priority" not in logs
    except AssertionError:
        print(_operator_log(stack, system_ns)[-6000:])
        raise
    finally:
        _helm(stack, "uninstall", release, "--namespace", system_ns)
        for n in (ns, system_ns):
            kube.core.delete_namespace(n)
