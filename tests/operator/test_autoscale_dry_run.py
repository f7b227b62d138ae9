"""--dry-run: the built-in autoscaler decides as always, logs the change it would make
once, and writes nothing (no replicas, no deletion costs, no status, no Event)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from voicefleet_contract.sessions import SessionsReport
from voicefleet_operator.autoscale_loop import Autoscaler
from voicefleet_operator.fleet import WorkerPod
from voicefleet_operator.metrics import OperatorMetrics
from voicefleet_operator.spec import parse_spec

from .util import minimal_spec

PODS = [WorkerPod("w0", "127.0.0.9", True, False)]
FULL = {"w0": SessionsReport(5, 5, False, ())}  # one worker, full: more are needed


class RecordingKube:
    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []

    def apply(self, obj: dict[str, Any], manager: str) -> None:
        self.writes.append(("apply", obj))

    def merge_patch(self, path: str, body: dict[str, Any]) -> None:
        self.writes.append(("merge_patch", path))

    def patch_status(self, path: str, body: dict[str, Any]) -> None:
        self.writes.append(("patch_status", path))


async def _ticks(dry_run: bool, n: int) -> tuple[RecordingKube, list[Any], OperatorMetrics]:
    spec = parse_spec("support", "voice", {**minimal_spec(), "sessions": {"maxPerWorker": 5}})
    kube, events = RecordingKube(), []
    metrics = OperatorMetrics(CollectorRegistry())
    clock = iter(float(t) for t in range(100, 200, 2))  # 2 s apart: past each step's pace
    a = Autoscaler(kube, metrics, clock=lambda: next(clock), dry_run=dry_run)  # type: ignore[arg-type]
    for _ in range(n):
        d = await a.tick(spec, PODS, 1, FULL, lambda *e: events.append(e), status={})
        assert d is not None and d.desired > 1  # the same decision either way
    return kube, events, metrics


async def test_a_dry_run_writes_nothing_and_says_what_it_would_do_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voicefleet_operator.autoscale_loop")
    kube, events, metrics = await _ticks(dry_run=True, n=3)
    assert kube.writes == [] and events == []
    assert caplog.text.count("dry run: would scale voice/support: 1 -> ") == 1
    up = {"namespace": "voice", "voiceagent": "support", "direction": "up"}
    assert metrics.registry.get_sample_value("voicefleet_autoscaler_decisions_total", up) == 1


async def test_without_it_the_same_fleet_is_scaled() -> None:
    kube, events, _ = await _ticks(dry_run=False, n=1)
    assert [w for w, _ in kube.writes] == ["apply", "patch_status"]
    assert events and events[0][1] == "Scaled"
