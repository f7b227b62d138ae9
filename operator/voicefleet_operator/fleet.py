"""One VoiceAgent's fleet as plain data, shared by the reconciler, the session feed, the
autoscaler and failover: the VoiceAgent's API path, its children's names and its worker
pods as the pods index sees them. At the bottom of the operator's import order
(docs/architecture.md): it imports nothing of the operator but the path helper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voicefleet_contract import (
    API_VERSION,
    APP_NAME,
    KIND,
    LABEL_INSTANCE,
    LABEL_NAME,
    WORKER_CONTAINER,
    WORKER_KEYS_SUFFIX,
)
from voicefleet_contract.sessions import SessionsReport

from .kube import path


def va_path(namespace: str, name: str) -> str:
    return path(API_VERSION, KIND, namespace, name)


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select VoiceAgent `name`'s worker pods (its Deployment's selector)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


@dataclass(frozen=True)
class ChildNames:
    deployment: str
    configmap: str
    service: str
    pdb: str
    network_policy: str
    keys: str  # the worker-keys Secret (render_worker_keys)

    @classmethod
    def of(cls, name: str) -> ChildNames:
        return cls(
            deployment=name,
            configmap=f"{name}-config",
            service=f"{name}-workers",
            pdb=name,
            network_policy=name,
            keys=f"{name}{WORKER_KEYS_SUFFIX}",
        )


@dataclass(frozen=True)
class WorkerPod:
    name: str
    ip: str
    ready: bool
    deleting: bool
    # The worker container's restartCount: a rise means its process died and another one
    # now answers on the same address (the kubelet restarts a crashed container at once).
    restarts: int = 0
    # The pod's labels (sorted pairs): what an HPA's label selector is matched against
    # when the operator serves the custom metrics API (custom_metrics.py).
    labels: tuple[tuple[str, str], ...] = ()


def index_pod(
    namespace: str | None,
    name: str,
    labels: Mapping[str, str],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> dict[tuple[str, str], WorkerPod] | None:
    """The pods index entry: (namespace, VoiceAgent) -> this worker pod. Pure."""
    if labels.get(LABEL_NAME) != APP_NAME or not namespace or not labels.get(LABEL_INSTANCE):
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    restarts = sum(
        int(c.get("restartCount") or 0)
        for c in status.get("containerStatuses") or []
        if c.get("name") == WORKER_CONTAINER
    )
    pod = WorkerPod(
        name,
        str(status.get("podIP") or ""),
        ready,
        bool(meta.get("deletionTimestamp")),
        restarts,
        tuple(sorted(labels.items())),
    )
    return {(namespace, labels[LABEL_INSTANCE]): pod}


@dataclass(frozen=True)
class Reading:
    report: SessionsReport | None
    error: str = ""  # why report is None: "timeout", "refused", "HTTP 503", ...
    at: float = 0.0  # monotonic seconds

    def same_as(self, other: Reading | None) -> bool:
        """Nothing a consumer acts on differs (the time of reading does not count)."""
        return other is not None and self.report == other.report and self.error == other.error
