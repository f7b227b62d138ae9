"""The testbed's real Prometheus finds voicefleet pods (through the node agent's file_sd)
and scrapes them by pod IP; the fake worker serves the contract's metric names."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import pytest

from voicefleet_contract import (
    HEALTH_PORT,
    LABEL_INSTANCE,
    LABEL_NAME,
    METRICS_PORT,
    METRICS_PORT_NAME,
)
from voicefleet_contract.metrics import WORKER_ACTIVE_SESSIONS
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.procs import wait_for
from voicefleet_testbed.stack import Stack

pytestmark = pytest.mark.cluster


def query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    url = f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def fake_worker_pod(name: str, voiceagent: str, active: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {LABEL_NAME: "voicefleet-worker", LABEL_INSTANCE: voiceagent},
        },
        "spec": {
            "containers": [
                {
                    "name": "worker",
                    "image": "voicefleet.dev/testbed/fake-worker:latest",
                    "env": [
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                        {"name": "FAKE_ACTIVE_SESSIONS", "value": str(active)},
                        {"name": "FAKE_CAPACITY", "value": "4"},
                    ],
                    "ports": [
                        {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT},
                        {"name": "health", "containerPort": HEALTH_PORT},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/", "port": "health"},
                        "periodSeconds": 1,
                    },
                }
            ]
        },
    }


def test_prometheus_scrapes_worker_pods_with_fleet_labels(
    stack: Stack, kube: Kube, namespace: str
) -> None:
    if "prometheus" not in stack.state.procs:
        pytest.fail("the testbed has no Prometheus: run `make binaries` (Debian's prometheus)")
    kube.create(fake_worker_pod("w1", "support", 3), namespace)
    metric = WORKER_ACTIVE_SESSIONS.name

    def scraped() -> list[dict[str, Any]]:
        return query(stack, f'{metric}{{namespace="{namespace}"}}')

    (series,) = wait_for(scraped, 60, f"Prometheus to scrape {metric} from the fake worker pod")
    assert series["metric"]["voiceagent"] == "support"
    assert series["metric"]["pod"] == "w1"
    assert series["value"][1] == "3"
