"""The built-in autoscaler's status write keeps `kubectl get va`'s SESSIONS column live."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from voicefleet_operator import crd
from voicefleet_operator.autoscale_loop import Autoscaler
from voicefleet_operator.autoscaler import PodSample, Policy, decide
from voicefleet_operator.kube import KubeApi
from voicefleet_operator.metrics import OperatorMetrics
from voicefleet_operator.reconcile import va_path
from voicefleet_operator.scrape import Scraper
from voicefleet_operator.spec import parse_spec

from .util import minimal_spec


class StatusKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.patches.append((path, dict(status)))
        return {}


def test_the_sessions_column_is_written_with_active_sessions() -> None:
    schema = crd.openapi_schema()["properties"]["spec"]
    spec = parse_spec("support", "voice", crd.apply_defaults(schema, minimal_spec()))
    kube = StatusKube()
    scaler = Autoscaler(cast(KubeApi, kube), cast(Scraper, None), cast(OperatorMetrics, None))
    policy = Policy(
        min_replicas=1,
        max_replicas=5,
        max_per_worker=10,
        target_utilization=0.7,
        buffer_sessions=0,
        scale_up_step=4,
        scale_down_step=1,
        stabilization_seconds=30,
    )
    d = decide(0.0, [PodSample("w0", 3, 10)], 1, policy)
    scaler._write_status(spec, d, status_capacity=10)
    path, status = kube.patches[-1]
    assert path == va_path("voice", "support")
    assert status["activeSessions"] == 3 and status["sessions"] == "3/10"
    # Without the reconciler's capacity yet: the sampled workers' capacity.
    scaler._write_status(spec, d)
    assert kube.patches[-1][1]["sessions"] == f"3/{d.capacity}"
