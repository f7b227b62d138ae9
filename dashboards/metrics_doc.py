"""docs/metrics.md, generated from the contract (`ALL_METRICS`), the dashboards and the
alert rules, so the reference cannot drift from what is served, drawn and alerted on."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from voicefleet_contract import metrics as m

from .grafana import queries, render
from .promql import metric_names, spec_for

REPO = Path(__file__).resolve().parent.parent
METRICS_DOC = REPO / "docs" / "metrics.md"
ALERT_RULES = REPO / "alerts" / "voicefleet.rules.yaml"

# What an operator should watch on each metric: one line each, every metric must have one.
WATCH: dict[str, str] = {
    m.WORKER_ACTIVE_SESSIONS.name: "Per-worker load; summed per VoiceAgent it is the fleet's live calls.",
    m.WORKER_CAPACITY.name: "Summed, the sessions the fleet accepts; compare with active sessions.",
    m.WORKER_DRAINING.name: "Non-zero during rollouts and scale-downs; a worker draining for hours holds a long call.",
    m.WORKER_REGISTERED.name: "0 on a non-draining worker means it gets no calls (LiveKit URL, credentials, network).",
    m.WORKER_SESSIONS_STARTED.name: "Rate of new calls per VoiceAgent: the demand the autoscaler follows.",
    m.WORKER_SESSIONS_ENDED.name: 'Watch `outcome="error"` and `"drain_timeout"`: calls that ended badly. `duplicate` counts agents that left a call to a later agent of theirs (LiveKit dispatching a room\'s agent again after a node loss).',
    m.WORKER_SESSION_DURATION.name: "Long calls set how long drains and rollouts take (drainTimeoutSeconds).",
    m.WORKER_DISPATCH_LATENCY.name: "p95 above a second: callers wait in silence for the agent to join.",
    m.WORKER_TURN_LATENCY.name: "The number callers feel: p95 over the alert's threshold (1 s by default) fires VoiceFleetTurnLatencyHigh.",
    m.WORKER_FIRST_AUDIO_LATENCY.name: "If it tracks turn latency, the model (or the network to it) is slow, not the worker.",
    m.WORKER_TOOL_CALLS.name: "Non-`ok` outcomes per tool: a broken backend makes the agent stall or apologise.",
    m.WORKER_TOOL_LATENCY.name: "Tool time adds straight to turn latency; keep p95 well under a second.",
    m.WORKER_RECONNECTIONS.name: "Spikes per link fire VoiceFleetReconnectionsSpiking; callers hear gaps.",
    m.WORKER_LIVEKIT_NODE.name: "On multi-node LiveKit: all workers on one node means that node is a single point of failure for the fleet, and the other nodes' rooms are served through it.",
    m.WORKER_INTERRUPTIONS.name: "A sudden rise often means latency grew (callers talk over a slow agent) or VAD tuning.",
    m.WORKER_MODEL_ERRORS.name: '`recoverable="false"` ends calls: check the Realtime API status and quota.',
    m.WORKER_SESSIONS_RESUMED.name: "Compare with failovers redispatched: fewer resumed means summaries are missing (writes failing, or resumeConversation off).",
    m.WORKER_SUMMARY_WRITES.name: "Any `error` means a re-dispatched call may start without its context: see the worker log (LiveKit API, or non-JSON room metadata).",
    m.OPERATOR_RECONCILES.name: '`result="error"` means retries; `blocked` means a condition on the VoiceAgent explains it.',
    m.OPERATOR_RECONCILE_DURATION.name: "p95 over a few seconds: a slow API server or webhook admission.",
    m.OPERATOR_RECONCILE_ERRORS.name: "Any sustained increase fires VoiceFleetReconcileErrors; the reason label says why.",
    m.OPERATOR_VOICEAGENT_READY.name: "0 for 15 minutes fires VoiceFleetVoiceAgentNotReady.",
    m.AUTOSCALER_DESIRED.name: "Compare with current and registered workers: a gap that lasts means pods do not start.",
    m.AUTOSCALER_CURRENT.name: "The Deployment's replicas as the autoscaler last set them.",
    m.AUTOSCALER_SESSIONS.name: "The autoscaler's session count; higher than the workers' own when workers do not answer.",
    m.AUTOSCALER_CAPACITY.name: "Capacity of ready, non-draining workers: what new calls can use.",
    m.AUTOSCALER_DECISIONS.name: "Frequent up/down flapping: raise bufferSessions or the scale-down delay.",
    m.AUTOSCALER_LIMITED.name: "1 with high utilization fires VoiceFleetCapacityExhausted: raise maxReplicas.",
    m.AUTOSCALER_SCRAPE_FAILURES.name: "Workers whose /sessions does not answer count as full and inflate scaling.",
    m.AUTOSCALER_TICK.name: "p95 near the tick period means the autoscaler falls behind (too many workers per agent).",
    m.FAILOVERS.name: "Spikes fire VoiceFleetFailoversSpiking; any `gave_up` fires VoiceFleetFailoverGaveUp.",
    m.FAILOVER_LATENCY.name: "How long a caller whose agent died waits for a new one.",
    m.CALLS_WAITING.name: "Above 0 for long: the fleet cannot grow fast enough or is at maxReplicas; callers hear silence.",
    m.CALLS_UNPLACED.name: "Rising: calls arrive while every worker is full; raise bufferSessions or lower targetUtilization.",
    m.ORPHANS_FOUND.name: "Mostly `sweep` instead of `webhook`/`worker` means webhooks do not arrive.",
    m.WEBHOOK_REQUESTS.name: "`bad_signature`/`unknown_key` fire VoiceFleetWebhookSignatureFailures.",
    m.WORKER_CALLERS.name: "The share of `sip` is your phone traffic; `sip` at 0 while a VoiceAgent has spec.telephony: calls do not reach it (TelephonyReady, the SIP bridge).",
    m.TELEPHONY_SYNCS.name: "`conflict` or `error` that lasts: the VoiceAgent's TelephonyReady condition says why; calls to its numbers may not reach it.",
    m.TELEPHONY_OBJECTS.name: "0 for `inbound` or `rule` on a VoiceAgent with spec.telephony: phone calls do not reach it.",
}

SOURCE = {
    **{s.name: "worker" for s in m.WORKER_METRICS},
    **{s.name: "operator" for s in m.OPERATOR_METRICS},
    **{s.name: "operator (autoscaler)" for s in m.AUTOSCALER_METRICS},
    **{s.name: "operator (failover)" for s in m.FAILOVER_METRICS},
    **{s.name: "operator (telephony)" for s in m.TELEPHONY_METRICS},
}
TARGET_LABELS = ("namespace", "voiceagent", "pod")


def alert_rules(path: Path = ALERT_RULES) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _users() -> dict[str, list[str]]:
    from .generate import DASHBOARDS

    used: dict[str, set[str]] = {s.name: set() for s in m.ALL_METRICS}
    for name, build in DASHBOARDS.items():
        for _title, expr in queries(render(build())):
            for series in metric_names(_grafana_free(expr)):
                spec = spec_for(series)
                if spec is not None:
                    used[spec.name].add(f"dashboard `{name}`")
    for rule in alert_rules():
        for series in metric_names(rule["expr"]):
            spec = spec_for(series)
            if spec is not None:
                used[spec.name].add(f"alert `{rule['alert']}`")
    return {k: sorted(v) for k, v in used.items()}


def _grafana_free(expr: str) -> str:
    from .promql import substitute

    return substitute(expr, {"namespace": "ns", "voiceagent": "va"})


def _labels(spec: m.MetricSpec) -> str:
    own = [f"`{lbl}`" for lbl in spec.labels]
    if spec.kind == "histogram":
        own.append("`le`")
    if spec in m.WORKER_METRICS:
        own += [f"`{lbl}`*" for lbl in TARGET_LABELS]
    return ", ".join(own) or "none"


def _series(spec: m.MetricSpec) -> str:
    if spec.kind == "histogram":
        return ", ".join(f"`{spec.name}{s}`" for s in ("_bucket", "_sum", "_count"))
    return f"`{spec.name}`"


def _section(title: str, specs: Iterable[m.MetricSpec], users: dict[str, list[str]]) -> list[str]:
    out = [f"## {title}", ""]
    for spec in specs:
        out += [
            f"### `{spec.name}`",
            "",
            f"- **type**: {spec.kind}"
            + (f", buckets {list(spec.buckets)}" if spec.buckets else ""),
            f"- **series**: {_series(spec)}",
            f"- **labels**: {_labels(spec)}",
            f"- **served by**: {SOURCE[spec.name]}",
            f"- **help**: {spec.help}",
            f"- **watch**: {WATCH[spec.name]}",
            f"- **used by**: {', '.join(users[spec.name]) or 'nothing yet'}",
            "",
        ]
    return out


def render_metrics_doc() -> str:
    missing = [s.name for s in m.ALL_METRICS if s.name not in WATCH]
    if missing:
        raise KeyError(f"no 'watch' note for {missing}: add one to dashboards/metrics_doc.py")
    users = _users()
    lines = [
        "# Metrics reference",
        "",
        "<!-- Generated by `python -m dashboards.generate` from contract/voicefleet_contract/metrics.py,",
        "     dashboards/generate.py and alerts/voicefleet.rules.yaml. Do not edit by hand. -->",
        "",
        "Every metric voicefleet serves, with the prefix `voicefleet_`. The names come from one",
        "source, `voicefleet_contract.metrics`; the dashboards and alert rules may only use these",
        "(a test parses every dashboard query and alert expression and checks).",
        "",
        "## Where the labels come from",
        "",
        "- **Workers** serve their metrics on the container port named `metrics` (9464) without",
        "  any fleet labels. Prometheus adds them as *target labels* (marked * below):",
        "  `namespace` (the pod's namespace), `pod` (the pod's name) and `voiceagent` (the pod's",
        "  `app.kubernetes.io/instance` label, which the operator sets to the VoiceAgent's name),",
        "  with `job=\"voicefleet-worker\"` (the pod's `app.kubernetes.io/name`). The chart's",
        "  PodMonitor does this with relabelings and `jobLabel`; the testbed's Prometheus gets the",
        "  same labels from the node agent's file_sd targets.",
        "- **The operator** labels its series itself with the VoiceAgent's `namespace` and",
        "  `voiceagent`. Its ServiceMonitor sets `honorLabels: true` so these win over the target",
        "  labels (without it Prometheus would rename them `exported_namespace`/",
        '  `exported_voiceagent`), and `job="voicefleet-operator"`. The testbed scrapes operator',
        "  pods the same way.",
        "",
        "| metric | type | served by |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{s.name}` | {s.kind} | {SOURCE[s.name]} |" for s in m.ALL_METRICS]
    lines.append("")
    lines += _section("Worker", m.WORKER_METRICS, users)
    lines += _section("Operator", m.OPERATOR_METRICS, users)
    lines += _section("Autoscaler", m.AUTOSCALER_METRICS, users)
    lines += _section("Failover and webhooks", m.FAILOVER_METRICS, users)
    lines += _section("Telephony", m.TELEPHONY_METRICS, users)
    return "\n".join(lines).rstrip("\n") + "\n"
