"""Metric names: one source for the worker, the operator, dashboards, alerts and docs.

Each `MetricSpec` is what a registry needs (name, kind, help, labels, buckets). The
worker and operator build their prometheus_client objects from these; dashboards and
alert rules may only name metrics listed here; `docs/metrics.md` documents each one (a
test checks all three agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

PREFIX: Final = "voicefleet_"
Kind = Literal["counter", "gauge", "histogram"]

# Turn latency: the target is ~300 ms, so resolve finely around it.
LATENCY_BUCKETS: Final = (
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
)  # fmt: skip
DURATION_BUCKETS: Final = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


# --- worker metrics (served by every worker pod on METRICS_PORT) ------------------------
# Worker-level labels (namespace, voiceagent, pod) come from Prometheus target labels, not
# from the worker itself; the worker labels only what varies inside one process.
WORKER_ACTIVE_SESSIONS: Final = MetricSpec(
    "voicefleet_worker_active_sessions", "gauge", "Sessions this worker is serving now."
)
WORKER_CAPACITY: Final = MetricSpec(
    "voicefleet_worker_capacity_sessions", "gauge", "Sessions this worker accepts (maxPerWorker)."
)
WORKER_DRAINING: Final = MetricSpec(
    "voicefleet_worker_draining", "gauge", "1 while the worker drains after SIGTERM, else 0."
)

WORKER_METRICS: Final[tuple[MetricSpec, ...]] = (
    WORKER_ACTIVE_SESSIONS,
    WORKER_CAPACITY,
    WORKER_DRAINING,
)

# --- operator metrics (served by the operator on its --metrics-port) --------------------
RECONCILE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

OPERATOR_RECONCILES: Final = MetricSpec(
    "voicefleet_operator_reconciles_total",
    "counter",
    "Reconciles of a VoiceAgent, by result: ok, blocked (a condition explains why: invalid "
    "spec, missing Secret, rejected apply) or error (retried).",
    ("namespace", "voiceagent", "result"),
)
OPERATOR_RECONCILE_DURATION: Final = MetricSpec(
    "voicefleet_operator_reconcile_duration_seconds",
    "histogram",
    "Time one reconcile of a VoiceAgent took.",
    ("namespace", "voiceagent"),
    RECONCILE_BUCKETS,
)
OPERATOR_RECONCILE_ERRORS: Final = MetricSpec(
    "voicefleet_operator_reconcile_errors_total",
    "counter",
    "Reconciles that failed or were blocked, by reason (the condition reason or the API error).",
    ("namespace", "voiceagent", "reason"),
)
OPERATOR_VOICEAGENT_READY: Final = MetricSpec(
    "voicefleet_operator_voiceagent_ready",
    "gauge",
    "1 when the VoiceAgent's Ready condition is True, else 0.",
    ("namespace", "voiceagent"),
)

OPERATOR_METRICS: Final[tuple[MetricSpec, ...]] = (
    OPERATOR_RECONCILES,
    OPERATOR_RECONCILE_DURATION,
    OPERATOR_RECONCILE_ERRORS,
    OPERATOR_VOICEAGENT_READY,
)

# --- the built-in autoscaler (served by the operator) -----------------------------------
_VA = ("namespace", "voiceagent")
AUTOSCALER_DESIRED: Final = MetricSpec(
    "voicefleet_autoscaler_desired_replicas", "gauge", "Workers the autoscaler wants.", _VA
)
AUTOSCALER_CURRENT: Final = MetricSpec(
    "voicefleet_autoscaler_current_replicas", "gauge", "The worker Deployment's replicas.", _VA
)
AUTOSCALER_SESSIONS: Final = MetricSpec(
    "voicefleet_autoscaler_sessions",
    "gauge",
    "Live sessions the autoscaler counted (a worker that did not answer counts as full).",
    _VA,
)
AUTOSCALER_CAPACITY: Final = MetricSpec(
    "voicefleet_autoscaler_capacity_sessions",
    "gauge",
    "Sessions the ready, non-draining workers accept.",
    _VA,
)
AUTOSCALER_DECISIONS: Final = MetricSpec(
    "voicefleet_autoscaler_decisions_total",
    "counter",
    "Replica changes the autoscaler applied, by direction (up, down).",
    (*_VA, "direction"),
)
AUTOSCALER_LIMITED: Final = MetricSpec(
    "voicefleet_autoscaler_limited_by_max",
    "gauge",
    "1 while demand needs more workers than maxReplicas allows.",
    _VA,
)
AUTOSCALER_SCRAPE_FAILURES: Final = MetricSpec(
    "voicefleet_autoscaler_scrape_failures_total",
    "counter",
    "Worker /sessions reads that failed, by error (timeout, refused, ...).",
    (*_VA, "error"),
)
AUTOSCALER_TICK: Final = MetricSpec(
    "voicefleet_autoscaler_tick_duration_seconds",
    "histogram",
    "One autoscaler tick for one VoiceAgent: read every worker, decide, apply.",
    _VA,
    RECONCILE_BUCKETS,
)
AUTOSCALER_METRICS: Final[tuple[MetricSpec, ...]] = (
    AUTOSCALER_DESIRED,
    AUTOSCALER_CURRENT,
    AUTOSCALER_SESSIONS,
    AUTOSCALER_CAPACITY,
    AUTOSCALER_DECISIONS,
    AUTOSCALER_LIMITED,
    AUTOSCALER_SCRAPE_FAILURES,
    AUTOSCALER_TICK,
)
