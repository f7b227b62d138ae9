"""What autoscaling modes hpa and keda render to (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from voicefleet_contract.metrics import WORKER_ACTIVE_SESSIONS
from voicefleet_operator.render import Owner
from voicefleet_operator.render_autoscaler import (
    render_hpa,
    render_scaled_object,
    sessions_query,
)
from voicefleet_operator.spec import parse_spec

from .util import body, minimal_spec


def _spec(per_worker: int = 10, **autoscaling: Any) -> Any:
    raw = minimal_spec()
    raw["sessions"] = {"maxPerWorker": per_worker}
    raw["autoscaling"] = {"targetUtilization": 0.7, **autoscaling}
    return parse_spec("support", "voice", raw)


OWNER = Owner.from_body(body(minimal_spec()))


def test_hpa_targets_sessions_per_worker_with_stabilisation() -> None:
    hpa = render_hpa(
        _spec(mode="hpa", minReplicas=2, maxReplicas=9, scaleDownStabilizationSeconds=120),
        OWNER,
    )
    s = hpa["spec"]
    assert s["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "support"}
    assert (s["minReplicas"], s["maxReplicas"]) == (2, 9)
    (metric,) = s["metrics"]
    assert metric["pods"]["metric"]["name"] == WORKER_ACTIVE_SESSIONS.name
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "7"}
    assert s["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    assert hpa["metadata"]["ownerReferences"] == [OWNER.reference()]


@pytest.mark.parametrize(("target", "quantity"), [(0.7, "7"), (0.65, "6500m"), (1.0, "10")])
def test_hpa_target_is_a_valid_quantity(target: float, quantity: str) -> None:
    hpa = render_hpa(_spec(mode="hpa", targetUtilization=target), OWNER)
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == quantity


@pytest.mark.parametrize(
    ("per_worker", "target", "threshold"),
    [(10, 0.7, "7"), (5, 0.7, "3.5"), (7, 0.7, "4.9"), (3, 0.7, "2.1"), (10, 0.65, "6.5")],
)
def test_keda_threshold_is_a_plain_decimal(per_worker: int, target: float, threshold: str) -> None:
    """KEDA parses trigger metadata as JSON numbers: a quantity ("3500m") is refused."""
    spec = _spec(per_worker, mode="keda", targetUtilization=target)
    so = render_scaled_object(spec, OWNER, "http://prom:9090")
    assert so["spec"]["triggers"][0]["metadata"]["threshold"] == threshold


def test_scaled_object_queries_the_fleet_sessions_plus_buffer() -> None:
    spec = _spec(mode="keda", minReplicas=0, maxReplicas=5, bufferSessions=4)
    so = render_scaled_object(spec, OWNER, "http://prom:9090")
    s = so["spec"]
    assert (s["minReplicaCount"], s["maxReplicaCount"]) == (0, 5)
    trigger = s["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == sessions_query(spec)
    assert sessions_query(spec) == (
        'sum(voicefleet_worker_active_sessions{namespace="voice",voiceagent="support"}) + 4'
    )
    assert trigger["metadata"]["threshold"] == "7"
    assert s["pollingInterval"] < 30  # faster than KEDA's default, still a poll
