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

WORKER_REGISTERED: Final = MetricSpec(
    "voicefleet_worker_registered",
    "gauge",
    "1 while the worker is registered with the LiveKit server for dispatch, else 0.",
)
WORKER_SESSIONS_STARTED: Final = MetricSpec(
    "voicefleet_worker_sessions_started_total", "counter", "Sessions (jobs) this worker accepted."
)
WORKER_SESSIONS_ENDED: Final = MetricSpec(
    "voicefleet_worker_sessions_ended_total",
    "counter",
    "Sessions that ended, by outcome: completed (the agent or the caller ended it), "
    "caller_gone, error, drain_timeout, duplicate (the agent left a call that a later "
    "agent of the same name was dispatched to).",
    ("outcome",),
)
WORKER_SESSION_DURATION: Final = MetricSpec(
    "voicefleet_worker_session_duration_seconds",
    "histogram",
    "How long a session lasted, from the agent joining to the session ending.",
    (),
    DURATION_BUCKETS,
)
WORKER_DISPATCH_LATENCY: Final = MetricSpec(
    "voicefleet_worker_dispatch_latency_seconds",
    "histogram",
    "From the job being offered to this worker to the agent being ready in the room.",
    (),
    LATENCY_BUCKETS,
)
WORKER_TURN_LATENCY: Final = MetricSpec(
    "voicefleet_worker_turn_latency_seconds",
    "histogram",
    "From the caller stopping speaking (the model's VAD) to the first agent audio frame "
    "sent into the room.",
    (),
    LATENCY_BUCKETS,
)
WORKER_FIRST_AUDIO_LATENCY: Final = MetricSpec(
    "voicefleet_worker_model_first_audio_seconds",
    "histogram",
    "From a model response starting to its first audio delta arriving (the model's share "
    "of turn latency).",
    (),
    LATENCY_BUCKETS,
)
WORKER_TOOL_CALLS: Final = MetricSpec(
    "voicefleet_worker_tool_calls_total",
    "counter",
    "Tool (function) calls, by tool and outcome: ok, http_error, timeout, refused (a "
    "link-local or metadata address, a redirect to another host, a header with no value), "
    "error.",
    ("tool", "outcome"),
)
WORKER_TOOL_LATENCY: Final = MetricSpec(
    "voicefleet_worker_tool_call_duration_seconds",
    "histogram",
    "Time a tool's HTTP endpoint took to answer.",
    ("tool",),
    LATENCY_BUCKETS,
)
WORKER_RECONNECTIONS: Final = MetricSpec(
    "voicefleet_worker_reconnections_total",
    "counter",
    "Reconnections, by link: livekit (worker to the LiveKit server), realtime (session to "
    "the Realtime API), room (the agent's room connection).",
    ("link",),
)
WORKER_LIVEKIT_NODE: Final = MetricSpec(
    "voicefleet_worker_livekit_node_info",
    "gauge",
    "1 for the LiveKit node (node id, region) this worker registered with last: it hands "
    "the worker its jobs. Join on pod for per-node views of other worker metrics.",
    ("node", "region"),
)
WORKER_INTERRUPTIONS: Final = MetricSpec(
    "voicefleet_worker_interruptions_total",
    "counter",
    "Agent answers cut short because the caller spoke over them.",
)
WORKER_MODEL_ERRORS: Final = MetricSpec(
    "voicefleet_worker_model_errors_total",
    "counter",
    "Errors the Realtime API reported, by whether the session recovered (recoverable).",
    ("recoverable",),
)

WORKER_SESSIONS_RESUMED: Final = MetricSpec(
    "voicefleet_worker_sessions_resumed_total",
    "counter",
    "Sessions that started from the conversation summary a previous agent left in the room "
    "(a re-dispatch after failover, with failover.resumeConversation).",
)
WORKER_SUMMARY_WRITES: Final = MetricSpec(
    "voicefleet_worker_summary_writes_total",
    "counter",
    "Writes of the rolling conversation summary to the room metadata, by result: ok, error "
    "(the LiveKit API failed, or the room's metadata is not a JSON object and is left alone).",
    ("result",),
)

WORKER_CALLERS: Final = MetricSpec(
    "voicefleet_worker_callers_total",
    "counter",
    "Sessions by how their caller came in (the first non-agent participant): sip (a phone "
    "call through LiveKit's SIP bridge, spec.telephony), webrtc (an app or browser), other "
    "(ingress and the like).",
    ("origin",),
)

WORKER_METRICS: Final[tuple[MetricSpec, ...]] = (
    WORKER_ACTIVE_SESSIONS,
    WORKER_CAPACITY,
    WORKER_DRAINING,
    WORKER_REGISTERED,
    WORKER_SESSIONS_STARTED,
    WORKER_SESSIONS_ENDED,
    WORKER_SESSION_DURATION,
    WORKER_DISPATCH_LATENCY,
    WORKER_TURN_LATENCY,
    WORKER_FIRST_AUDIO_LATENCY,
    WORKER_TOOL_CALLS,
    WORKER_TOOL_LATENCY,
    WORKER_RECONNECTIONS,
    WORKER_LIVEKIT_NODE,
    WORKER_INTERRUPTIONS,
    WORKER_MODEL_ERRORS,
    WORKER_SESSIONS_RESUMED,
    WORKER_SUMMARY_WRITES,
    WORKER_CALLERS,
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

# --- failover (served by the operator) -------------------------------------------------
FAILOVERS: Final = MetricSpec(
    "voicefleet_failovers_total",
    "counter",
    "Orphaned sessions handled, by outcome: redispatched (a new agent was dispatched), "
    "caller_gone (nobody left to serve), gave_up (attempts exhausted).",
    (*_VA, "outcome"),
)
FAILOVER_LATENCY: Final = MetricSpec(
    "voicefleet_failover_latency_seconds",
    "histogram",
    "From an agent being lost to a new agent joining the same room.",
    _VA,
    (*LATENCY_BUCKETS, 10.0, 20.0, 30.0, 60.0),
)
ORPHANS_FOUND: Final = MetricSpec(
    "voicefleet_failover_orphans_found_total",
    "counter",
    "Orphaned sessions found, by what noticed first: webhook, worker (the long-polled view of "
    "each worker's sessions), pod (a worker pod deleted or gone), sweep (the periodic LiveKit API sweep).",
    (*_VA, "source"),
)
CALLS_WAITING: Final = MetricSpec(
    "voicefleet_calls_waiting",
    "gauge",
    "Calls with no agent waiting for a free worker slot: LiveKit could not place them (every "
    "worker at its target load), or their worker died while every other was full. The "
    "builtin autoscaler counts them as demand; each is dispatched once a worker has a slot.",
    _VA,
)
CALLS_UNPLACED: Final = MetricSpec(
    "voicefleet_calls_unplaced_total",
    "counter",
    "Calls LiveKit could not place because no worker had a free slot (it drops such a job "
    "and never retries it; the operator dispatches it again once a worker has room).",
    _VA,
)
WEBHOOK_REQUESTS: Final = MetricSpec(
    "voicefleet_webhook_requests_total",
    "counter",
    "LiveKit webhook requests received, by result: accepted, bad_signature, unknown_key, "
    "stale, malformed, standby (a standby replica answered 503 for LiveKit to retry).",
    ("result",),
)
FAILOVER_METRICS: Final[tuple[MetricSpec, ...]] = (
    FAILOVERS,
    FAILOVER_LATENCY,
    ORPHANS_FOUND,
    CALLS_WAITING,
    CALLS_UNPLACED,
    WEBHOOK_REQUESTS,
)

# --- telephony (the operator's sync of spec.telephony with LiveKit's SIP service) --------
TELEPHONY_SYNCS: Final = MetricSpec(
    "voicefleet_telephony_syncs_total",
    "counter",
    "Syncs of a VoiceAgent's spec.telephony with LiveKit, by result: synced, conflict "
    "(another trunk or rule routes the numbers), error (LiveKit or a Secret), removed.",
    (*_VA, "result"),
)
TELEPHONY_OBJECTS: Final = MetricSpec(
    "voicefleet_telephony_objects",
    "gauge",
    "LiveKit SIP objects the operator keeps for a VoiceAgent, by kind: inbound (trunk), "
    "outbound (trunk), rule (dispatch rule); 1 while it stands.",
    (*_VA, "kind"),
)
TELEPHONY_METRICS: Final[tuple[MetricSpec, ...]] = (TELEPHONY_SYNCS, TELEPHONY_OBJECTS)

ALL_METRICS: Final[tuple[MetricSpec, ...]] = (
    *WORKER_METRICS,
    *OPERATOR_METRICS,
    *AUTOSCALER_METRICS,
    *FAILOVER_METRICS,
    *TELEPHONY_METRICS,
)
"""Every metric voicefleet serves: docs/metrics.md, dashboards and alerts are checked against it."""
