"""Autoscaling mode keda end to end (issue 15): the operator renders a ScaledObject, REAL
KEDA (its operator and external metrics API server, host processes of the testbed) turns
it into an HPA, the controller-manager's HPA controller asks KEDA through the API
server's aggregation layer, KEDA's Prometheus scaler queries the testbed's Prometheus,
which scrapes the REAL worker pods, and live WebRTC calls raise the sessions. Nothing is
shortened: KEDA, the HPA (its 15 s sync) and the operator run with their production
timers, and the ScaledObject is what the operator renders for any cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.operator.cluster import OperatorProcess, running_operator
from voicefleet_operator.settings import Settings
from voicefleet_testbed.keda import Keda
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from .fleet import WORKER_START_S, Fleet, Shape, hang_up, ramp, turns, until

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow, pytest.mark.keda]

# 2 calls per worker at full utilisation plus 1 buffer session: KEDA's HPA wants
# ceil((sessions + 1) / 2) workers, so 4 callers take the fleet from 1 to 3.
SHAPE = Shape(
    max_per_worker=2, min_replicas=1, max_replicas=4, buffer_sessions=1, window_s=300, mode="keda"
)
CALLERS = 4
KEDA_API = "keda.sh/v1alpha1"
HPA_API = "autoscaling/v2"


@pytest.fixture(scope="module")
def operator(
    stack: Stack, kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator with its production timers (the shared fixture shortens the resync and
    the failover sweep for other tests); it only renders the ScaledObject here."""
    d = Settings()
    timers = [
        f"--resync-seconds={d.resync_seconds:g}",
        f"--failover-sweep-seconds={d.failover_sweep_seconds:g}",
    ]
    with running_operator(stack, kube, tmp_path_factory.mktemp("operator"), timers) as op:
        yield op


def condition(obj: dict[str, Any] | None, type_: str) -> str:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return str(c["status"])
    return ""


def external_metric(kube: Kube, namespace: str, metric: str, scaled_object: str) -> float:
    """The value the HPA controller gets: a GET of the external metrics API through the API
    server, which proxies it to KEDA's metrics server."""
    selector = urllib.parse.quote(f"scaledobject.keda.sh/name={scaled_object}")
    path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
    resp = kube.api.call_api(
        *kube.api.param_serialize(
            "GET", f"{path}?labelSelector={selector}", auth_settings=["BearerToken"]
        )
    )
    items = json.loads(resp.read())["items"]  # type: ignore[no-untyped-call]
    assert len(items) == 1, items
    return _quantity(items[0]["value"])


def _quantity(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def rescales(kube: Kube, namespace: str, hpa: str) -> list[int]:
    """The sizes an HPA set, in order, from its `SuccessfulRescale` Events ("New size: N;
    reason: external metric ... above target")."""
    events = kube.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={hpa},reason=SuccessfulRescale"
    ).items
    events.sort(key=lambda e: str(e.first_timestamp or e.event_time))  # RFC 3339, UTC
    return [int((e.message or "").split("New size: ")[1].split(";")[0]) for e in events]


async def test_keda_scales_the_workers_on_live_sessions(
    keda: Keda, operator: OperatorProcess, stack: Stack, kube: Kube, namespace: str
) -> None:
    fleet = Fleet(stack, kube, namespace)
    await fleet.create(SHAPE)
    name = fleet.name

    # KEDA took the operator's ScaledObject: Ready (its trigger parsed, Prometheus
    # reachable) and an HPA of its own on the worker Deployment.
    await until(
        lambda: condition(kube.get(KEDA_API, "ScaledObject", name, namespace), "Ready") == "True",
        90,
        "KEDA to report the ScaledObject Ready",
    )
    hpa = await until(
        lambda: kube.get(HPA_API, "HorizontalPodAutoscaler", f"keda-hpa-{name}", namespace),
        60,
        "KEDA's HPA",
    )
    assert [o["kind"] for o in hpa["metadata"]["ownerReferences"]] == ["ScaledObject"], hpa
    assert hpa["spec"]["scaleTargetRef"]["name"] == fleet.deployment()["metadata"]["name"]
    metric = hpa["spec"]["metrics"][0]["external"]
    assert metric["target"] == {"type": "AverageValue", "averageValue": "2"}, metric
    metric_name = metric["metric"]["name"]

    await until(lambda: fleet.settled(SHAPE.min_replicas), WORKER_START_S, "the first worker")
    calls: list[Any] = []
    t0 = time.monotonic()
    try:
        # Each caller joins once the fleet covers the ones before plus the buffer; the
        # fleet grows only through KEDA's HPA (the operator leaves replicas alone in this
        # mode), so every step up below is KEDA's.
        await ramp(fleet, SHAPE, CALLERS, calls, print)
        ramp_s = time.monotonic() - t0
        assert fleet.replicas() == SHAPE.needed(CALLERS) == 3
        # KEDA's HPA made each step (the operator never writes replicas in this mode).
        sizes = await until(
            lambda: rescales(kube, namespace, f"keda-hpa-{name}") or None, 10, "rescale Events"
        )
        assert sizes == [2, 3], sizes

        # What KEDA serves through the API server: the live sessions plus the buffer.
        want = CALLERS + SHAPE.buffer_sessions
        got = await until(
            lambda: external_metric(kube, namespace, metric_name, name) == want or None,
            60,
            f"external metric {metric_name} = {want}",
        )
        assert got
        now = kube.get(HPA_API, "HorizontalPodAutoscaler", f"keda-hpa-{name}", namespace)
        assert now is not None and now["status"]["desiredReplicas"] == 3, now

        # The calls are whole: every caller is answered on a turn at the top.
        heard = await turns(calls)
        assert all(x is not None for x in heard), heard
        print(f"\nkeda mode: {CALLERS} callers, 1 -> 3 workers by KEDA's HPA in {ramp_s:.1f}s")
    finally:
        await asyncio.shield(hang_up(calls))
