"""The testbed Prometheus's configuration and its pod discovery.

Debian's Prometheus is built without kubernetes_sd, so the node agent, which knows every
pod and its IP, writes a file_sd target file instead, keeping what a PodMonitor on
voicefleet's pods would keep: pods labelled `app.kubernetes.io/name: voicefleet-*`, their
container port named `metrics`, labelled as the chart's PodMonitor and ServiceMonitor
label them (docs/metrics.md, "Where the labels come from"):

- worker pods (`voicefleet-worker`): `job="voicefleet-worker"`, `namespace`, `pod`, and
  `voiceagent` from `app.kubernetes.io/instance`; scraped without honor_labels, as a
  PodMonitor does;
- operator pods (`voicefleet-operator`): `job="voicefleet-operator"`, `namespace`, `pod`;
  scraped with honor_labels, as the chart's ServiceMonitor does, so the operator's own
  `namespace`/`voiceagent` labels (the VoiceAgent's) win over the target's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from voicefleet_contract import LABEL_INSTANCE, LABEL_NAME, METRICS_PORT_NAME

JSON = dict[str, Any]
OPERATOR_JOB = "voicefleet-operator"  # the operator pod's app.kubernetes.io/name


def scrape_targets(pods: Iterable[tuple[JSON, str]]) -> list[JSON]:
    """file_sd groups for (pod, pod IP) pairs, sorted for a stable file."""
    groups = []
    for pod, ip in pods:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        name = labels.get(LABEL_NAME, "")
        if not name.startswith("voicefleet-") or not ip or meta.get("deletionTimestamp"):
            continue
        for c in pod["spec"].get("containers", []):
            for port in c.get("ports") or []:
                if port.get("name") == METRICS_PORT_NAME:
                    target_labels = {
                        "job": name,
                        "namespace": meta["namespace"],
                        "pod": meta["name"],
                    }
                    if name != OPERATOR_JOB:
                        target_labels["voiceagent"] = labels.get(LABEL_INSTANCE, "")
                    groups.append(
                        {"targets": [f"{ip}:{port['containerPort']}"], "labels": target_labels}
                    )
    return sorted(groups, key=lambda g: (g["labels"]["namespace"], g["labels"]["pod"]))


def write_targets(path: Path, groups: list[JSON]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=1))
    tmp.replace(path)  # atomic: Prometheus never reads half a file


def prometheus_config(pod_targets: Path, static: Mapping[str, str]) -> str:
    def pods(job: str, action: str, honor_labels: bool) -> JSON:
        """One scrape job over the node agent's targets: operator pods kept or dropped."""
        return {
            "job_name": job,
            "honor_labels": honor_labels,
            "file_sd_configs": [{"files": [str(pod_targets)]}],
            "relabel_configs": [
                {"source_labels": ["job"], "regex": OPERATOR_JOB, "action": action}
            ],
        }

    # Job names are unique per config; the `job` label comes from each target's labels.
    jobs: list[JSON] = [
        pods("voicefleet-operator-pods", "keep", honor_labels=True),
        pods("voicefleet-pods", "drop", honor_labels=False),
    ]
    # Processes outside pods (the operator `make up` runs): labelled as the operator's
    # ServiceMonitor labels it, job=<name>, its own namespace/voiceagent labels kept.
    jobs += [
        {"job_name": n, "honor_labels": True, "static_configs": [{"targets": [t]}]}
        for n, t in static.items()
    ]
    return json.dumps(
        {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"}, "scrape_configs": jobs},
        indent=2,
    )
