"""OpenTelemetry traces, only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

livekit-agents already emits spans per session and per turn (`agent_session`,
`user_turn`, `agent_turn`, ...) to the tracer provider it is given; the worker adds a
`voicefleet.session` span per job. The OTLP exporter is the optional `otlp` extra; without
it (or without the variable) tracing stays off and costs nothing.
"""

from __future__ import annotations

import importlib
import logging

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .config import Settings

log = logging.getLogger("voicefleet.worker")


def setup_tracing(settings: Settings) -> TracerProvider | None:
    if not settings.otlp_endpoint:
        return None
    try:
        exporter_mod = importlib.import_module(
            "opentelemetry.exporter.otlp.proto.http.trace_exporter"
        )
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otlp extra is not installed; tracing off"
        )
        return None
    from livekit.agents import telemetry

    cfg = settings.config
    resource = Resource.create(
        {
            "service.name": "voicefleet-worker",
            "k8s.namespace.name": settings.pod_namespace,
            "k8s.pod.name": settings.pod_name,
            "voicefleet.voiceagent": cfg.voiceAgent,
            "voicefleet.agent_name": cfg.agentName,
        }
    )
    provider = TracerProvider(resource=resource)
    # the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and _HEADERS) itself
    provider.add_span_processor(BatchSpanProcessor(exporter_mod.OTLPSpanExporter()))
    telemetry.set_tracer_provider(provider, allow_pii=cfg.observability.logTranscripts)
    return provider
