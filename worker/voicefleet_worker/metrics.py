"""The worker's Prometheus metrics, built from the contract's `WORKER_METRICS` specs.

Jobs run as threads of the worker process (`JobExecutorType.THREAD`, see runtime.py), so
one in-process registry sees every session and one endpoint serves it: no multiprocess
directory, no IPC. prometheus_client metrics are thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from voicefleet_contract import metrics as spec
from voicefleet_contract.metrics import WORKER_METRICS, MetricSpec

TOOL_OUTCOMES = ("ok", "http_error", "timeout", "refused", "error")
SESSION_OUTCOMES = ("completed", "caller_gone", "error", "drain_timeout", "duplicate")
LINKS = ("livekit", "realtime", "room")
SUMMARY_RESULTS = ("ok", "error")
CALLER_ORIGINS = ("sip", "webrtc", "other")


def _build(s: MetricSpec, registry: CollectorRegistry) -> MetricWrapperBase:
    # prometheus_client appends `_total` to counters itself
    if s.kind == "counter":
        name = s.name.removesuffix("_total")
        return Counter(name, s.help, s.labels, registry=registry)
    if s.kind == "gauge":
        return Gauge(s.name, s.help, s.labels, registry=registry)
    return Histogram(s.name, s.help, s.labels, buckets=s.buckets, registry=registry)


LIVEKIT_AGENTS_PREFIX = "lk_agents_"


class Passthrough(Collector):
    """Another registry's metric families whose names start with `prefix`, collected with
    ours: livekit-agents registers its own (`lk_agents_*`: active jobs, worker load, child
    processes, process start time) in prometheus_client's default registry, which the
    worker's endpoint does not otherwise serve."""

    def __init__(self, prefix: str, source: CollectorRegistry = REGISTRY) -> None:
        self.prefix, self.source = prefix, source

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if family.name.startswith(self.prefix):
                yield family


class WorkerMetrics:
    """Typed handles on every worker metric; `by_name` holds them all by contract name."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `*_created` series double the scrape and no dashboard reads them (process-wide
        # switch; the worker process serves nothing else)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.registry.register(Passthrough(LIVEKIT_AGENTS_PREFIX))
        self.by_name: dict[str, Any] = {s.name: _build(s, self.registry) for s in WORKER_METRICS}
        m = self.by_name
        self.active_sessions: Gauge = m[spec.WORKER_ACTIVE_SESSIONS.name]
        self.capacity: Gauge = m[spec.WORKER_CAPACITY.name]
        self.draining: Gauge = m[spec.WORKER_DRAINING.name]
        self.registered: Gauge = m[spec.WORKER_REGISTERED.name]
        self.sessions_started: Counter = m[spec.WORKER_SESSIONS_STARTED.name]
        self.sessions_ended: Counter = m[spec.WORKER_SESSIONS_ENDED.name]
        self.session_duration: Histogram = m[spec.WORKER_SESSION_DURATION.name]
        self.dispatch_latency: Histogram = m[spec.WORKER_DISPATCH_LATENCY.name]
        self.turn_latency: Histogram = m[spec.WORKER_TURN_LATENCY.name]
        self.first_audio: Histogram = m[spec.WORKER_FIRST_AUDIO_LATENCY.name]
        self.tool_calls: Counter = m[spec.WORKER_TOOL_CALLS.name]
        self.tool_latency: Histogram = m[spec.WORKER_TOOL_LATENCY.name]
        self.reconnections: Counter = m[spec.WORKER_RECONNECTIONS.name]
        self.livekit_node: Gauge = m[spec.WORKER_LIVEKIT_NODE.name]
        self.interruptions: Counter = m[spec.WORKER_INTERRUPTIONS.name]
        self.model_errors: Counter = m[spec.WORKER_MODEL_ERRORS.name]
        self.sessions_resumed: Counter = m[spec.WORKER_SESSIONS_RESUMED.name]
        self.summary_writes: Counter = m[spec.WORKER_SUMMARY_WRITES.name]
        self.callers: Counter = m[spec.WORKER_CALLERS.name]
        # Known label values exist from the start, so a dashboard's rate() sees a zero
        # series before the first event instead of no series at all.
        for outcome in SESSION_OUTCOMES:
            self.sessions_ended.labels(outcome=outcome)
        for link in LINKS:
            self.reconnections.labels(link=link)
        for recoverable in ("true", "false"):
            self.model_errors.labels(recoverable=recoverable)
        for result in SUMMARY_RESULTS:
            self.summary_writes.labels(result=result)
        for origin in CALLER_ORIGINS:
            self.callers.labels(origin=origin)

    def init_tool(self, tool: str) -> None:
        for outcome in TOOL_OUTCOMES:
            self.tool_calls.labels(tool=tool, outcome=outcome)
        self.tool_latency.labels(tool=tool)
