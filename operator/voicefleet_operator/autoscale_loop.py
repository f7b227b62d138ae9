"""The built-in autoscaler's shell: one tick of one VoiceAgent (mode `builtin`) decides the
replica count from every ready worker's `/sessions`, and applies it.

A thin shell: the pods and their reports come from the `SessionFeed` (one long poll per
worker, shared with failover), the decision from a pure function. `fleet_loop.FleetLoop`
calls `Autoscaler.tick` when the feed, the Deployment or the spec changes, and once a
second only while something is in motion (`at_rest`: a scale-down waiting out its
stabilisation window, a worker not answering); a settled fleet is looked at every
`IDLE_SECONDS` as a backstop. What it writes:
- the Deployment's `spec.replicas`, under the replicas field manager, only on a change;
- right before lowering replicas, `controller.kubernetes.io/pod-deletion-cost` on each
  worker from its live sessions, so the ReplicaSet removes idle workers first;
- an Event on the VoiceAgent for each change, metrics each run, and the VoiceAgent's
  status (`activeSessions`, `desiredReplicas`, `autoscaler`) when something changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from voicefleet_contract import (
    POD_DELETION_COST,
)
from voicefleet_contract.sessions import SessionsReport

from .autoscaler import (
    Decision,
    PodSample,
    Policy,
    Recommendation,
    decide,
    deletion_costs,
    samples_of,
)
from .daemons import TICK_SECONDS
from .fleet import ChildNames, WorkerPod, va_path
from .kube import KubeApi, path
from .metrics import OperatorMetrics
from .render import render_replicas_patch
from .settings import REPLICAS_FIELD_MANAGER
from .spec import VoiceAgentSpec

log = logging.getLogger(__name__)
IDLE_SECONDS = 30.0  # a settled fleet: the backstop


def policy_for(spec: VoiceAgentSpec, current: int) -> Policy:
    a = spec.autoscaling
    return Policy(
        min_replicas=a.minReplicas,
        max_replicas=a.maxReplicas,
        max_per_worker=spec.max_per_worker,
        target_utilization=a.targetUtilization,
        buffer_sessions=a.bufferSessions,
        # Up: at most double (or +4) per second; down: a tenth (at least one) per step.
        scale_up_step=max(4, current),
        scale_down_step=max(1, current // 10),
        stabilization_seconds=float(a.scaleDownStabilizationSeconds),
    )


class Autoscaler:
    def __init__(
        self,
        kube: KubeApi,
        metrics: OperatorMetrics,
        clock: Callable[[], float] = time.monotonic,
        dry_run: bool = False,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self.dry_run = dry_run  # decide and log, write nothing (Settings.dry_run)
        self.history: dict[tuple[str, str], tuple[Recommendation, ...]] = {}
        self.changed_at: dict[tuple[str, str], float] = {}  # when replicas last changed
        self.would: dict[tuple[str, str], int] = {}  # dry run: the last change logged

    def forget(self, namespace: str, name: str) -> None:
        self.history.pop((namespace, name), None)
        self.changed_at.pop((namespace, name), None)
        self.would.pop((namespace, name), None)

    async def tick(
        self,
        spec: VoiceAgentSpec,
        pods: Sequence[WorkerPod],
        current: int | None,
        reports: Mapping[str, SessionsReport | None],
        post_event: Callable[[str, str, str], None] = lambda *_: None,
        status: Mapping[str, Any] | None = None,
        waiting: int = 0,
    ) -> Decision | None:
        """One decision for one VoiceAgent; None when its Deployment does not exist yet.

        `reports`: pod name -> its latest `/sessions` (None: it did not answer; absent:
        not read yet). `status`: the VoiceAgent's live status; what the autoscaler owns in
        it is written whenever it differs (a reconcile that read the VoiceAgent before the
        last write may have put back older values). `waiting`: calls LiveKit could not
        place (failover's count through the feed), counted as demand."""
        if current is None:
            return None
        ns, name = spec.namespace, spec.name
        t0 = time.perf_counter()
        samples = samples_of(pods, reports, spec.max_per_worker)
        d = decide(
            self.clock(),
            samples,
            current,
            policy_for(spec, current),
            self.history.get((ns, name), ()),
            waiting,
        )
        self.history[(ns, name)] = d.history
        now = self.clock()
        d = pace(d, current, now, self.changed_at.get((ns, name)))
        if self.dry_run:
            self._log_would(spec, samples, current, d)
        elif d.desired != current:
            self.changed_at[(ns, name)] = now
            await asyncio.to_thread(self._apply, spec, samples, current, d)
            self.metrics.as_decisions.labels(ns, name, d.direction).inc()
            post_event("Normal", "Scaled", f"workers {current} -> {d.desired}: {d.reason}")
            log.info("autoscale %s/%s: %d -> %d (%s)", ns, name, current, d.desired, d.reason)
        patch = None if self.dry_run else status_patch(d, status or {})
        if patch is not None:
            await asyncio.to_thread(
                self.kube.patch_status, va_path(spec.namespace, spec.name), patch
            )
        m = self.metrics
        m.as_desired.labels(ns, name).set(d.desired)
        m.as_current.labels(ns, name).set(current)
        m.as_sessions.labels(ns, name).set(d.sessions)
        m.as_capacity.labels(ns, name).set(d.capacity)
        m.as_limited.labels(ns, name).set(1 if d.limited_by_max else 0)
        m.as_tick.labels(ns, name).observe(time.perf_counter() - t0)
        return d

    def _log_would(
        self, spec: VoiceAgentSpec, samples: Sequence[PodSample], current: int, d: Decision
    ) -> None:
        """Dry run: each change the autoscaler would make, logged once (not every tick
        while the fleet, untouched, keeps asking for it), and counted as a decision."""
        key = (spec.namespace, spec.name)
        if d.desired == current:
            self.would.pop(key, None)
            return
        if self.would.get(key) == d.desired:
            return
        self.would[key] = d.desired
        self.metrics.as_decisions.labels(*key, d.direction).inc()
        costs = deletion_costs(samples) if d.desired < current else {}
        log.info(
            "dry run: would scale %s/%s: %d -> %d (%s)%s",
            *key, current, d.desired, d.reason,
            f"; deletion costs {costs}" if costs else "",
        )  # fmt: skip

    def _apply(
        self, spec: VoiceAgentSpec, samples: Sequence[PodSample], current: int, d: Decision
    ) -> None:
        if d.desired < current:
            # Right before a scale-down, not on every tick (each write wakes the RS controller).
            for pod, cost in deletion_costs(samples).items():
                self.kube.merge_patch(
                    path("v1", "Pod", spec.namespace, pod),
                    {"metadata": {"annotations": {POD_DELETION_COST: str(cost)}}},
                )
        self.kube.apply(render_replicas_patch(spec, d.desired), REPLICAS_FIELD_MANAGER)


def status_patch(d: Decision, status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The status fields the autoscaler owns, or None when `status` already says so. Pure.

    The SESSIONS column's denominator is the reconciler's `status.capacity` (ready workers
    x maxPerWorker) when it has one, else the sampled workers' capacity."""
    capacity = status.get("capacity")
    capacity = capacity if isinstance(capacity, int) else d.capacity
    wanted: dict[str, Any] = {
        "activeSessions": d.sessions,
        # `kubectl get va`'s SESSIONS column: live, not only at the next reconcile.
        "sessions": f"{d.sessions}/{capacity}",
        "desiredReplicas": d.desired,
        "autoscaler": {
            "mode": "builtin",
            "desiredReplicas": d.desired,
            "neededReplicas": d.needed,
            "sessions": d.sessions,
            "capacity": d.capacity,
            "unansweredWorkers": d.unanswered,
            "waitingCalls": d.waiting,
            "limitedByMax": d.limited_by_max,
            "reason": d.reason,
        },
    }
    if all(status.get(k) == v for k, v in wanted.items()):
        return None
    return wanted


def pace(d: Decision, current: int, now: float, changed_at: float | None) -> Decision:
    """At most one change of replicas per `TICK_SECONDS`. Pure.

    The loop runs on every change it hears of, including its own scaling's Deployment
    event: without this, the steps that bound each decision (a tenth of the fleet down,
    double up) would follow each other as fast as the events, not once a second."""
    if d.desired == current or changed_at is None or now - changed_at >= TICK_SECONDS:
        return d
    return replace(
        d,
        desired=current,
        direction="none",
        reason=f"{d.reason}; next step within {TICK_SECONDS:g}s of the last",
    )


def at_rest(d: Decision | None, current: int | None) -> bool:
    """Nothing will change with time alone: every worker answered, and the desired count,
    the current one and every recommendation in the stabilisation window agree. Pure.
    (Not at rest: run again in a second; at rest: only when something changes.)"""
    if d is None or current is None:
        return True  # no Deployment yet: its creation wakes the loop
    return (
        d.unanswered == 0 and d.desired == current and all(r.replicas == current for r in d.history)
    )


def deployment_name(spec: VoiceAgentSpec) -> str:
    return ChildNames.of(spec.name).deployment
