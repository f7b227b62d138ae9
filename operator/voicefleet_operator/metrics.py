"""The operator's Prometheus metrics, built from the contract's `OPERATOR_METRICS` specs."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from voicefleet_contract import metrics as m


def _build(spec: m.MetricSpec, registry: CollectorRegistry) -> Any:
    # prometheus_client appends _total to counters itself.
    name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
    if spec.kind == "counter":
        return Counter(name, spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(name, spec.help, spec.labels, registry=registry)
    return Histogram(name, spec.help, spec.labels, buckets=spec.buckets, registry=registry)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles: Counter = _build(m.OPERATOR_RECONCILES, self.registry)
        self.duration: Histogram = _build(m.OPERATOR_RECONCILE_DURATION, self.registry)
        self.errors: Counter = _build(m.OPERATOR_RECONCILE_ERRORS, self.registry)
        self.ready: Gauge = _build(m.OPERATOR_VOICEAGENT_READY, self.registry)
        self.as_desired: Gauge = _build(m.AUTOSCALER_DESIRED, self.registry)
        self.as_current: Gauge = _build(m.AUTOSCALER_CURRENT, self.registry)
        self.as_sessions: Gauge = _build(m.AUTOSCALER_SESSIONS, self.registry)
        self.as_capacity: Gauge = _build(m.AUTOSCALER_CAPACITY, self.registry)
        self.as_decisions: Counter = _build(m.AUTOSCALER_DECISIONS, self.registry)
        self.as_limited: Gauge = _build(m.AUTOSCALER_LIMITED, self.registry)
        self.as_scrape_failures: Counter = _build(m.AUTOSCALER_SCRAPE_FAILURES, self.registry)
        self.as_tick: Histogram = _build(m.AUTOSCALER_TICK, self.registry)

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
            for labels in list(_label_sets(metric)):
                if labels[:2] == (namespace, name):
                    metric.remove(*labels)

    def serve(self, address: str, port: int) -> None:
        start_http_server(port, addr=address, registry=self.registry)


def _label_sets(metric: Any) -> list[tuple[str, ...]]:
    # prometheus_client keeps children by label values; no public iterator exists.
    with metric._lock:
        return list(metric._metrics.keys())
