"""The testbed's Prometheus labels targets as the chart's PodMonitor/ServiceMonitor do
(docs/metrics.md), and its configuration is valid for the real promtool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from voicefleet_contract import LABEL_INSTANCE, LABEL_NAME, METRICS_PORT_NAME
from voicefleet_testbed.prometheus import prometheus_config, scrape_targets

from .test_alerts import promtool


def _pod(name: str, app: str, instance: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "namespace": "voice",
            "labels": {LABEL_NAME: app, LABEL_INSTANCE: instance},
        },
        "spec": {"containers": [{"ports": [{"name": METRICS_PORT_NAME, "containerPort": 9464}]}]},
    }


def test_target_labels_match_the_chart() -> None:
    groups = scrape_targets(
        [
            (_pod("support-1", "voicefleet-worker", "support"), "127.9.0.2"),
            (_pod("op-1", "voicefleet-operator", "voicefleet"), "127.9.0.3"),
            (_pod("other", "nginx", "x"), "127.9.0.4"),
        ]
    )
    by_pod = {g["labels"]["pod"]: g for g in groups}
    assert set(by_pod) == {"support-1", "op-1"}
    assert by_pod["support-1"]["labels"] == {
        "job": "voicefleet-worker",
        "namespace": "voice",
        "pod": "support-1",
        "voiceagent": "support",
    }
    # The operator labels its own series with the VoiceAgent's namespace/voiceagent.
    assert by_pod["op-1"]["labels"] == {
        "job": "voicefleet-operator",
        "namespace": "voice",
        "pod": "op-1",
    }


def test_config_is_valid_and_honours_operator_labels(tmp_path: Path) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    text = prometheus_config(targets, {"voicefleet-operator": "127.0.0.1:8080"})
    config = json.loads(text)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"])  # unique job names
    assert jobs["voicefleet-operator-pods"]["honor_labels"] is True
    assert jobs["voicefleet-pods"]["honor_labels"] is False
    assert jobs["voicefleet-operator"]["honor_labels"] is True
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    out = subprocess.run(
        [promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
