"""Helpers for the chart tests: the real helm binary, rendered manifests as dicts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicefleet_testbed.binaries import Binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "voicefleet"
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
# Every mode switched on: prometheus-operator objects, dashboards, namespace-scoped RBAC, HA.
ALL_MODES = {
    "monitoring.serviceMonitor.enabled": "true",
    "monitoring.podMonitor.enabled": "true",
    "monitoring.prometheusRule.enabled": "true",
    "monitoring.dashboards.enabled": "true",
    "watchNamespaces[0]": "voice",
    "watchNamespaces[1]": "voice-staging",
    "replicaCount": "2",
}

# The optional call page, with what it needs.
CALL_PAGE = {
    "callPage.enabled": "true",
    "callPage.livekitUrl": "wss://livekit.example.com",
    "callPage.credentialsSecret": "livekit-credentials",
}


def helm() -> Path:
    path = Binaries.locate().helm
    if not path.is_file():
        pytest.fail(f"helm is missing ({path}): run `make binaries`")
    return path


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm()), *args], capture_output=True, text=True, check=check, timeout=120
    )


def template(
    values: dict[str, str] | None = None,
    *,
    apis: bool = True,
    namespace: str = "voicefleet-system",
    release: str = "voicefleet",
) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    args.append("--include-crds")
    if apis:
        for api in MONITORING_APIS:
            args += ["--api-versions", api]
    for key, value in (values or {}).items():
        args += ["--set", f"{key}={value}"]
    out = run_helm(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
