"""The operator's Prometheus metrics, built from the contract's `OPERATOR_METRICS` specs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from voicefleet_contract import metrics as m
from voicefleet_contract.metric_build import build_metric, label_sets


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles: Counter = build_metric(m.OPERATOR_RECONCILES, self.registry)
        self.duration: Histogram = build_metric(m.OPERATOR_RECONCILE_DURATION, self.registry)
        self.errors: Counter = build_metric(m.OPERATOR_RECONCILE_ERRORS, self.registry)
        self.ready: Gauge = build_metric(m.OPERATOR_VOICEAGENT_READY, self.registry)
        self.as_desired: Gauge = build_metric(m.AUTOSCALER_DESIRED, self.registry)
        self.as_current: Gauge = build_metric(m.AUTOSCALER_CURRENT, self.registry)
        self.as_sessions: Gauge = build_metric(m.AUTOSCALER_SESSIONS, self.registry)
        self.as_capacity: Gauge = build_metric(m.AUTOSCALER_CAPACITY, self.registry)
        self.as_decisions: Counter = build_metric(m.AUTOSCALER_DECISIONS, self.registry)
        self.as_limited: Gauge = build_metric(m.AUTOSCALER_LIMITED, self.registry)
        self.as_scrape_failures: Counter = build_metric(m.AUTOSCALER_SCRAPE_FAILURES, self.registry)
        self.as_tick: Histogram = build_metric(m.AUTOSCALER_TICK, self.registry)

    def observe(
        self, namespace: str, name: str, seconds: float, result: str, reason: str | None
    ) -> None:
        self.reconciles.labels(namespace, name, result).inc()
        self.duration.labels(namespace, name).observe(seconds)
        if reason:
            self.errors.labels(namespace, name, reason).inc()

    def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        self.ready.labels(namespace, name).set(1 if ready else 0)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted VoiceAgent's series (they would otherwise live forever)."""
        for metric in (
            self.reconciles,
            self.duration,
            self.errors,
            self.ready,
            self.as_desired,
            self.as_current,
            self.as_sessions,
            self.as_capacity,
            self.as_decisions,
            self.as_limited,
            self.as_scrape_failures,
            self.as_tick,
        ):
            for labels in list(label_sets(metric)):
                if labels[:2] == (namespace, name):
                    metric.remove(*labels)

    def serve(self, address: str, port: int) -> None:
        start_http_server(port, addr=address, registry=self.registry)
