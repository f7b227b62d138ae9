"""The worker's Prometheus metrics, built from the contract's `WORKER_METRICS` specs.

One registry per pod, in the worker process, served by one endpoint. Jobs run as threads
share it directly (prometheus_client metrics are thread-safe); a job process gets the same
`WorkerMetrics` built on `job_link.RemoteMetric`s, which send each change to the worker
process to apply here (see job_link.py): no multiprocess directory to grow with every job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from voicefleet_contract import metrics as spec
from voicefleet_contract.metric_build import build_metric
from voicefleet_contract.metrics import WORKER_METRICS, MetricSpec

TOOL_OUTCOMES = ("ok", "http_error", "timeout", "refused", "error")
SESSION_OUTCOMES = ("completed", "caller_gone", "error", "drain_timeout", "duplicate")
LINKS = ("livekit", "realtime", "room")
SUMMARY_RESULTS = ("ok", "error")
CALLER_ORIGINS = ("sip", "webrtc", "other")


class CounterLike(Protocol):
    def labels(self, *values: Any, **labels: Any) -> CounterLike: ...
    def inc(self, amount: float = 1) -> None: ...


class GaugeLike(Protocol):
    def labels(self, *values: Any, **labels: Any) -> GaugeLike: ...
    def set(self, value: float) -> None: ...
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...
    def clear(self) -> None: ...


class HistogramLike(Protocol):
    def labels(self, *values: Any, **labels: Any) -> HistogramLike: ...
    def observe(self, amount: float) -> None: ...


# how a metric of the contract is made: prometheus_client's in the worker process, a
# forwarder in a job process
Build = Callable[[MetricSpec, CollectorRegistry], Any]


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

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        build: Build = build_metric,
        passthrough: bool = True,
    ) -> None:
        # `*_created` series double the scrape and no dashboard reads them (process-wide
        # switch; the worker process serves nothing else)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        if passthrough:
            self.registry.register(Passthrough(LIVEKIT_AGENTS_PREFIX))
        self.by_name: dict[str, Any] = {s.name: build(s, self.registry) for s in WORKER_METRICS}
        m = self.by_name
        self.active_sessions: GaugeLike = m[spec.WORKER_ACTIVE_SESSIONS.name]
        self.capacity: GaugeLike = m[spec.WORKER_CAPACITY.name]
        self.draining: GaugeLike = m[spec.WORKER_DRAINING.name]
        self.registered: GaugeLike = m[spec.WORKER_REGISTERED.name]
        self.sessions_started: CounterLike = m[spec.WORKER_SESSIONS_STARTED.name]
        self.sessions_ended: CounterLike = m[spec.WORKER_SESSIONS_ENDED.name]
        self.session_duration: HistogramLike = m[spec.WORKER_SESSION_DURATION.name]
        self.dispatch_latency: HistogramLike = m[spec.WORKER_DISPATCH_LATENCY.name]
        self.turn_latency: HistogramLike = m[spec.WORKER_TURN_LATENCY.name]
        self.first_audio: HistogramLike = m[spec.WORKER_FIRST_AUDIO_LATENCY.name]
        self.tool_calls: CounterLike = m[spec.WORKER_TOOL_CALLS.name]
        self.tool_latency: HistogramLike = m[spec.WORKER_TOOL_LATENCY.name]
        self.reconnections: CounterLike = m[spec.WORKER_RECONNECTIONS.name]
        self.livekit_node: GaugeLike = m[spec.WORKER_LIVEKIT_NODE.name]
        self.interruptions: CounterLike = m[spec.WORKER_INTERRUPTIONS.name]
        self.model_errors: CounterLike = m[spec.WORKER_MODEL_ERRORS.name]
        self.sessions_resumed: CounterLike = m[spec.WORKER_SESSIONS_RESUMED.name]
        self.summary_writes: CounterLike = m[spec.WORKER_SUMMARY_WRITES.name]
        self.callers: CounterLike = m[spec.WORKER_CALLERS.name]
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
