"""What every job of one job process (or thread) shares, and how a job process (or thread)
is set up by livekit-agents' setup hook before its job.

Jobs run in threads of the worker process (`VOICEFLEET_JOB_EXECUTOR=thread`, the stock
agent's default) or in livekit-agents' job processes (`process`, with its warm pool; the
default for an agent module of one's own). The worker process holds the one
`SessionRegistry` and metrics registry of the pod either way (`Runtime`): a job thread
uses them directly, a job process through job_link.py. Each job sees a `JobRuntime`, kept
in `proc.userdata`. The measured trade-off (CPU, memory per call, isolation) is in
docs/worker.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from livekit.agents import JobProcess
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from .config import Settings
from .job_link import ParentLink, RemoteSessions, remote_metrics
from .metrics import WorkerMetrics
from .sessions import SessionRegistry, SessionSink
from .tracing import setup_tracing


@dataclass(frozen=True)
class JobRuntime:
    """What every job of one job process (or thread) shares: the settings, the metrics
    and where sessions are reported (the worker process's registry, directly or through
    job_link), and the tracer."""

    settings: Settings
    metrics: WorkerMetrics
    sessions: SessionSink
    tracer: trace.Tracer | None = None
    # a job process's own spans, flushed at each job's end (None: nothing to flush)
    flush: Callable[[], object] | None = None


@dataclass
class Runtime:
    """The worker process's state: the one session registry and metrics of the pod."""

    settings: Settings
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    tracer_provider: TracerProvider | None = None
    sessions: SessionRegistry = field(init=False)
    tracer: trace.Tracer | None = field(init=False, default=None)
    registered: bool = field(init=False, default=False)  # with LiveKit, now: readiness

    def set_registered(self, value: bool) -> None:
        self.registered = value

    def __post_init__(self) -> None:
        if self.tracer_provider is not None:
            self.tracer = self.tracer_provider.get_tracer("voicefleet.worker")
        self.sessions = SessionRegistry(self.settings.config.sessions.maxPerWorker, self.metrics)
        for t in self.settings.config.tools:
            self.metrics.init_tool(t.name)

    def job_runtime(self) -> JobRuntime:
        """What a job thread uses: this process's own registry and metrics."""
        return JobRuntime(self.settings, self.metrics, self.sessions, self.tracer)


USERDATA_KEY: Final = "voicefleet"


Prewarm = Callable[[JobProcess], Any]


def setup_job_thread(job_runtime: JobRuntime, prewarm: Prewarm | None, proc: JobProcess) -> None:
    """livekit-agents' setup hook for a job thread; then the agent's own prewarm."""
    proc.userdata[USERDATA_KEY] = job_runtime
    if prewarm is not None:
        prewarm(proc)


def setup_job_process(
    settings: Settings, link_path: str, prewarm: Prewarm | None, proc: JobProcess
) -> None:
    """livekit-agents' setup hook in a new job process (pickled by reference, run once
    per process before its job): metrics and sessions go to the worker process. Then the
    agent's own prewarm (a custom agent's models, loaded once per process)."""
    link = ParentLink(link_path)
    provider = setup_tracing(settings)
    proc.userdata[USERDATA_KEY] = JobRuntime(
        settings,
        remote_metrics(link),
        RemoteSessions(link),
        provider.get_tracer("voicefleet.worker") if provider is not None else None,
        provider.force_flush if provider is not None else None,
    )
    if prewarm is not None:
        prewarm(proc)
