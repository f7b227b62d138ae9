"""HA mode installed into the testbed: two operator replicas under kopf peering (the
chart's KopfPeering and CRDs, the operator's --peering from the chart's env); both run,
both record themselves in the peering object, and the VoiceAgent still becomes Ready;
LiveKit's webhooks reach the active replica only, also after the leader is deleted."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from voicefleet_contract import LABEL_NAME, LABEL_OPERATOR_ACTIVE
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack
from voicefleet_testbed.user_install import helm as stack_helm

from ..operator.cluster import FAKE_IMAGE, install_images, secrets, voiceagent, wait_for
from .chart import CHART
from .test_install import _namespace, _operator_log, _ready, _worker_spec

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


def _webhook_backends(kube: Kube, ns: str, fullname: str) -> list[str]:
    """The ready pods the webhook Service selects: what its EndpointSlice holds in a
    cluster (the hollow node's pods have 127.x addresses, which EndpointSlices refuse)."""
    svc = kube.get("v1", "Service", f"{fullname}-webhook", ns) or {}
    selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
    return sorted(
        p["metadata"]["name"]
        for p in kube.list("v1", "Pod", ns, label_selector=selector)
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions") or []
        )
    )


def test_two_replicas_peer_and_reconcile(stack: Stack, kube: Kube) -> None:
    install_images(stack)
    uid = uuid.uuid4().hex[:5]
    release, system_ns, ns = f"ha-{uid}", f"ha-system-{uid}", f"ha-voice-{uid}"
    _namespace(kube, system_ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    _namespace(kube, ns)
    out = stack_helm(
        stack,
        "install", release, str(CHART),
        "--namespace", system_ns,
        "--take-ownership",  # the CRDs, which the session's tests applied already
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

        # Webhooks reach the active replica only: the one kopf's peering lets act (the
        # highest priority, identified by its pod name) labels its pod, the webhook
        # Service selects the label. A standby knows no keys and would answer 401.
        def active_pods() -> list[str]:
            return sorted(
                p["metadata"]["name"]
                for p in _ready_operators(kube, system_ns)
                if p["metadata"].get("labels", {}).get(LABEL_OPERATOR_ACTIVE) == "true"
            )

        def leader() -> str:
            status = kube.get("kopf.dev/v1", "KopfPeering", fullname, ns)["status"]  # type: ignore[index]
            return str(max(status, key=lambda peer: status[peer]["priority"]))

        def one_active(other_than: str = "") -> str | None:
            """The one active replica, if it is also all the webhook Service holds."""
            active = active_pods()
            if len(active) != 1 or active[0] == other_than:
                return None
            return active[0] if _webhook_backends(kube, system_ns, fullname) == active else None

        first = wait_for(one_active, 30, "the active replica labelled, behind the webhook Service")
        assert first == leader(), (first, status)
        # The leader goes (an upgrade, a node drain): another replica takes over (the
        # standby, or the Deployment's new pod if its priority is higher), labels itself,
        # and the webhook Service follows.
        kube.core.delete_namespaced_pod(first, system_ns)
        wait_for(
            lambda: one_active(other_than=first),
            90,
            "another replica active after the leader went, behind the webhook Service",
        )
    except AssertionError:
        print(_operator_log(stack, system_ns)[-6000:])
        raise
    finally:
        stack_helm(stack, "uninstall", release, "--namespace", system_ns)
        for n in (ns, system_ns):
            kube.core.delete_namespace(n)
