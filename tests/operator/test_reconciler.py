"""reconciler.Reconciler against the fake API: what each trigger costs once folded."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from voicefleet_operator.fleet import va_path
from voicefleet_operator.kube import Applied
from voicefleet_operator.lookups import Lookups
from voicefleet_operator.metrics import OperatorMetrics
from voicefleet_operator.reconciler import Reconciler
from voicefleet_operator.settings import FIELD_MANAGER, Settings

from .test_reconcile import DEP, NS, FakeKube, _setup

PDB = f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/support"


@pytest.fixture(autouse=True)
def no_kopf_events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    posted: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda ref, type, reason, message: posted.append(reason))
    return posted


def _reconciler(k: FakeKube, **settings: Any) -> Reconciler:
    return Reconciler(k, Settings(**settings), OperatorMetrics(), Lookups.cached())


def _ready(k: FakeKube) -> None:
    dep = k.objects[DEP]
    dep["status"] = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": 1,
        "readyReplicas": 1,
        "updatedReplicas": 1,
    }
    dep["metadata"]["resourceVersion"] = "status-1"


def _child(k: FakeKube, p: str) -> tuple[str, str, dict[str, Any]]:
    body = copy.deepcopy(k.objects[p])
    return (body["kind"], "MODIFIED", body)


async def test_a_controllers_status_write_refreshes_the_status_only() -> None:
    k = _setup()
    r = _reconciler(k)
    await r.reconcile(NS, "support", "create")
    applies = len(k.applies)
    _ready(k)
    k.calls.clear()
    out = await r.reconcile(NS, "support", "Deployment MODIFIED", child=_child(k, DEP))
    assert out is not None and out.ready
    assert [v for v, _ in k.calls] == ["GET", "PATCH"]  # the VoiceAgent, its status
    assert len(k.applies) == applies
    # The disruption controller's status write: nothing at all.
    k.objects[PDB]["status"] = {"currentHealthy": 1}
    k.calls.clear()
    await r.reconcile(NS, "support", "PodDisruptionBudget MODIFIED", child=_child(k, PDB))
    assert k.calls == []


async def test_an_edit_by_hand_is_repaired_in_full(no_kopf_events: list[str]) -> None:
    k = _setup()
    r = _reconciler(k)
    await r.reconcile(NS, "support", "create")
    image = k.objects[DEP]["spec"]["template"]["spec"]["containers"][0]["image"]
    k.objects[DEP]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    k.objects[DEP]["metadata"]["generation"] += 1
    await r.reconcile(NS, "support", "Deployment MODIFIED", child=_child(k, DEP))
    assert k.objects[DEP]["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert "DriftRepaired" in no_kopf_events


async def test_events_of_the_runs_own_applies_are_not_drift() -> None:
    """The watch delivers the Deployment's events while the reconcile that applied it
    still runs; they are judged against what that reconcile applied, once it is done."""
    k = _setup()
    r = _reconciler(k)
    loop = asyncio.get_running_loop()
    followups: list[asyncio.Future[Any]] = []
    real_apply = k.apply

    def apply(obj: Mapping[str, Any], field_manager: str) -> Applied:
        applied = real_apply(obj, field_manager)
        if obj["kind"] == "Deployment":
            event = ("Deployment", "MODIFIED", copy.deepcopy(applied.obj))
            loop.call_soon_threadsafe(
                lambda: followups.append(
                    asyncio.ensure_future(r.reconcile(NS, "support", "event", child=event))
                )
            )
        return applied

    k.apply = apply  # type: ignore[method-assign]
    await r.reconcile(NS, "support", "create")
    await asyncio.sleep(0)
    applies = len(k.applies)
    await asyncio.gather(*followups)
    assert followups and len(k.applies) == applies


async def test_the_timer_resyncs_in_full_only_when_due() -> None:
    k = _setup()
    now = [0.0]
    r = Reconciler(
        k, Settings(resync_seconds=600), OperatorMetrics(), Lookups.cached(), lambda: now[0]
    )
    await r.reconcile(NS, "support", "create")
    assert r.timer_action(NS, "support") == "status"  # its worker is not Ready yet
    _ready(k)
    await r.reconcile(NS, "support", "Deployment MODIFIED", child=_child(k, DEP))
    assert r.timer_action(NS, "support") == "none"
    now[0] = 479.0  # jittered: due between 80 % and 100 % of the period
    assert r.timer_action(NS, "support") == "none"
    now[0] = 600.0
    assert r.timer_action(NS, "support") == "resync"


async def test_a_blocked_voiceagent_is_retried_in_full() -> None:
    k = _setup(secrets=False)
    r = _reconciler(k)
    out = await r.reconcile(NS, "support", "create")
    assert out is not None and out.problem is not None
    assert r.timer_action(NS, "support") == "full"
    k.put(f"/api/v1/namespaces/{NS}/secrets/livekit", {"data": {"apiKey": "", "apiSecret": ""}})
    k.put(f"/api/v1/namespaces/{NS}/secrets/openai", {"data": {"apiKey": ""}})
    r.lookups = Lookups.uncached()  # past the absence's few seconds
    out = await r.reconcile(NS, "support", "retry")
    assert out is not None and out.problem is None
    assert ("Deployment", FIELD_MANAGER) in k.applies


async def test_a_deleted_voiceagent_is_forgotten() -> None:
    k = _setup()
    r = _reconciler(k)
    await r.reconcile(NS, "support", "create")
    del k.objects[va_path(NS, "support")]
    await r.reconcile(NS, "support", "resync")
    assert not r._keys and r.timer_action(NS, "support") == "none"


async def test_background_requests_fold_and_stop_with_the_operator() -> None:
    k = _setup()
    r = _reconciler(k)
    await r.reconcile(NS, "support", "create")
    _ready(k)
    k.calls.clear()
    for _ in range(5):  # a rollout's events, handed over without waiting
        r.submit(NS, "support", "Deployment MODIFIED", child=_child(k, DEP))
    await asyncio.gather(*r._background)
    # The first starts at once, the four queued behind it fold into one more refresh.
    assert [v for v, _ in k.calls] == ["GET", "PATCH", "GET"]
    r.submit(NS, "support", "Deployment MODIFIED", child=_child(k, DEP))
    await r.close()
    assert not r._background
