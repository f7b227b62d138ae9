"""What `spec.autoscaling.mode` hpa and keda render to: the alternatives people already run.

Both scale the same worker Deployment on the same signal as the built-in autoscaler (live
sessions, planned at `targetUtilization` of `maxPerWorker` per worker), so the three modes
are comparable; they differ in how fast they see it (docs/autoscaling.md):
- hpa: an autoscaling/v2 HorizontalPodAutoscaler on the Pods metric
  `voicefleet_worker_active_sessions`, which a custom-metrics adapter (e.g.
  prometheus-adapter) must serve; its `behavior` carries the stabilisation windows.
- keda: a KEDA `ScaledObject` with a Prometheus trigger on the fleet's summed sessions.
Pure: plain data in, plain dicts out.
"""

from __future__ import annotations

import math
from typing import Any, Final

from voicefleet_contract.metrics import WORKER_ACTIVE_SESSIONS

from .fleet import ChildNames
from .render import Owner, labels
from .spec import VoiceAgentSpec

HPA_API: Final = "autoscaling/v2"
KEDA_API: Final = "keda.sh/v1alpha1"
KEDA_GROUP_PATH: Final = "/apis/keda.sh/v1alpha1"  # discovery: 404 when KEDA is absent
KEDA_POLLING_SECONDS: Final = 5  # KEDA's default is 30 s; 5 s is what it can sensibly do


def sessions_per_worker(spec: VoiceAgentSpec) -> float:
    """The per-worker target every mode plans with."""
    return spec.max_per_worker * spec.autoscaling.targetUtilization


def _quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers plain, else milli-units."""
    if float(value).is_integer():
        return str(int(value))
    return f"{math.ceil(value * 1000)}m"


def _decimal(value: float) -> str:
    """A plain decimal to three places ("3.5", "7"): what KEDA's trigger metadata takes.
    KEDA parses `threshold` as a JSON number, so a Kubernetes quantity ("3500m") fails
    the ScaledObject ("unable to unmarshal to field type float64")."""
    return f"{round(value, 3):.3f}".rstrip("0").rstrip(".")


def _behavior(spec: VoiceAgentSpec) -> dict[str, Any]:
    a = spec.autoscaling
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": a.scaleUpStabilizationSeconds,
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 15},
            ],
            "selectPolicy": "Max",
        },
        "scaleDown": {
            "stabilizationWindowSeconds": a.scaleDownStabilizationSeconds,
            "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
        },
    }


def _meta(spec: VoiceAgentSpec, owner: Owner) -> dict[str, Any]:
    return {
        "name": ChildNames.of(spec.name).deployment,
        "namespace": spec.namespace,
        "labels": labels(spec.name, "autoscaler"),
        "ownerReferences": [owner.reference()],
    }


def _target(spec: VoiceAgentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": ChildNames.of(spec.name).deployment,
    }


def render_hpa(spec: VoiceAgentSpec, owner: Owner) -> dict[str, Any]:
    a = spec.autoscaling
    return {
        "apiVersion": HPA_API,
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(spec, owner),
        "spec": {
            "scaleTargetRef": _target(spec),
            "minReplicas": max(1, a.minReplicas),
            "maxReplicas": a.maxReplicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": WORKER_ACTIVE_SESSIONS.name},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": _quantity(sessions_per_worker(spec)),
                        },
                    },
                }
            ],
            "behavior": _behavior(spec),
        },
    }


def sessions_query(spec: VoiceAgentSpec) -> str:
    """The fleet's live sessions plus the buffer, as the Prometheus target labels name them."""
    sel = f'namespace="{spec.namespace}",voiceagent="{spec.name}"'
    query = f"sum({WORKER_ACTIVE_SESSIONS.name}{{{sel}}})"
    buffer = spec.autoscaling.bufferSessions
    return f"{query} + {buffer}" if buffer else query


def render_scaled_object(spec: VoiceAgentSpec, owner: Owner, prometheus_url: str) -> dict[str, Any]:
    a = spec.autoscaling
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": _meta(spec, owner),
        "spec": {
            "scaleTargetRef": _target(spec),
            "minReplicaCount": a.minReplicas,
            "maxReplicaCount": a.maxReplicas,
            "pollingInterval": KEDA_POLLING_SECONDS,
            "cooldownPeriod": max(a.scaleDownStabilizationSeconds, 30),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": sessions_query(spec),
                        "threshold": _decimal(sessions_per_worker(spec)),
                    },
                }
            ],
        },
    }
