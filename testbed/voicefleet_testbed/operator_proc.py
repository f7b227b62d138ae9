"""The voicefleet operator from this checkout, as `make up` runs it.

It installs the VoiceAgent CRD (crds/voiceagent.yaml) and the operator's RBAC
(operator/rbac: a ServiceAccount in voicefleet-system bound to a least-privilege
ClusterRole), writes a kubeconfig with a token for that ServiceAccount (never the admin
token), and runs `python -m voicefleet_operator` as a process, as a Deployment of the
chart would run it in a cluster. Its log is `<state dir>/logs/voicefleet-operator.log`.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any, Final

import yaml

from . import controlplane as cp
from .binaries import REPO_DIR
from .kube import Kube
from .pki import Pki
from .procs import wait_for

NAME: Final = "voicefleet-operator"
NAMESPACE: Final = "voicefleet-system"
CRD_NAME: Final = "voiceagents.voicefleet.dev"
TOKEN_SECONDS: Final = 7 * 24 * 3600  # a long-lived dev stack; `make up` again renews it


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def install_crd(kube: Kube) -> None:
    kube.apply(_yaml(REPO_DIR / "crds" / "voiceagent.yaml"), manager="testbed")

    def established() -> bool:
        got = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
        conds = (got or {}).get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

    wait_for(established, 30, "the VoiceAgent CRD to be established")


def install_rbac(kube: Kube) -> str:
    """operator/rbac's ServiceAccount, ClusterRole and binding; returns a token for it."""
    if kube.get("v1", "Namespace", NAMESPACE) is None:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for f in ("serviceaccount.yaml", "clusterrole.yaml", "clusterrolebinding.yaml"):
        kube.apply(_yaml(REPO_DIR / "operator" / "rbac" / f), manager="testbed")
    return kube.mint_token(NAMESPACE, NAME, seconds=TOKEN_SECONDS)


def prepare(kube: Kube, api_server: str, pki: Pki, state_dir: Path) -> Path:
    """CRD and RBAC in the cluster; returns the operator's own kubeconfig."""
    install_crd(kube)
    token = install_rbac(kube)
    kubeconfig = state_dir / "operator.kubeconfig"
    kubeconfig.write_text(cp.kubeconfig_yaml(api_server, pki.ca_cert, token, user=NAME))
    kubeconfig.chmod(0o600)
    return kubeconfig


def argv(
    kubeconfig: Path,
    metrics_port: int,
    health_port: int,
    webhook_port: int = 0,
    prometheus_url: str = "",
) -> list[str]:
    """`webhook_port`: where the stack's LiveKit sends its webhooks (0: none);
    `prometheus_url`: the stack's Prometheus, which mode keda's ScaledObjects name."""
    return [
        sys.executable, "-m", "voicefleet_operator",
        f"--kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        f"--health-port={health_port}",
        f"--webhook-port={webhook_port}",
        "--log-format=text",
        "--worker-log-format=text",
        *([f"--prometheus-url={prometheus_url}"] if prometheus_url else []),
    ]  # fmt: skip


def healthy(health_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False
