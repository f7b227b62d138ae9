"""Prometheus metrics built from their `MetricSpec` (metrics.py): the one builder the
operator and the worker share, so a metric's name, help, labels and buckets are written
once and spelled the same on both sides."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .metrics import MetricSpec


def build_metric(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    """The metric `spec` describes, registered in `registry`."""
    if spec.kind == "counter":
        # prometheus_client appends `_total` to counters itself
        return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    return Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=registry)


def label_sets(metric: Any) -> list[tuple[str, ...]]:
    """The label values of every child `metric` has. prometheus_client has no public
    iterator for them; this is the one place that reads its private state."""
    with metric._lock:
        return list(metric._metrics.keys())
