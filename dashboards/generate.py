"""voicefleet's Grafana dashboards: the one source of dashboards/*.json.

    python -m dashboards.generate          # rewrite dashboards/*.json and docs/metrics.md
    python -m dashboards.generate --check  # exit 1 if a committed file differs

Every metric name comes from the contract (`voicefleet_contract.metrics`). Worker metrics
carry no namespace/voiceagent labels of their own: Prometheus adds them as target labels
(`namespace`, `pod`, `voiceagent` from the pod's `app.kubernetes.io/instance`), both in
the chart's PodMonitor and in the testbed's Prometheus. Operator metrics carry their own
`namespace`/`voiceagent` labels (scraped with honor_labels). See docs/metrics.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from voicefleet_contract import metrics as m

from .grafana import JSON, Dashboard, Panel, Query, Row, Variable, render

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "dashboards"
TURN_TARGET_SECONDS = 0.3  # the latency target the dashboards draw as a red line
RATE = "$__rate_interval"

FLEET = 'namespace=~"$namespace"'
ONE = 'namespace="$namespace", voiceagent="$voiceagent"'


def sel(spec: m.MetricSpec, matchers: str = "", suffix: str = "") -> str:
    if spec.kind == "histogram" and suffix not in ("_bucket", "_sum", "_count"):
        raise ValueError(f"{spec.name} is a histogram: use _bucket, _sum or _count")
    name = spec.name + suffix
    return f"{name}{{{matchers}}}" if matchers else name


def quantiles(spec: m.MetricSpec, matchers: str, by: str = "") -> tuple[Query, ...]:
    group = f"{by}, le" if by else "le"
    prefix = "{{" + by.split(",")[0].strip() + "}} " if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({sel(spec, matchers, '_bucket')}[{RATE}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def latency_panel(title: str, spec: m.MetricSpec, matchers: str, description: str) -> Panel:
    return Panel(
        title,
        quantiles(spec, matchers),
        unit="s",
        threshold=TURN_TARGET_SECONDS,
        description=f"{description} p50/p95/p99; the red line is the {int(TURN_TARGET_SECONDS * 1000)} ms target.",
        width=8,
    )


VA = "{{namespace}}/{{voiceagent}}"


# --- fleet overview ----------------------------------------------------------------------
def fleet() -> Dashboard:
    f = FLEET
    by = "namespace, voiceagent"
    capacity = Row(
        "Sessions and capacity",
        (
            Panel(
                "Active sessions",
                (Query(f"sum({sel(m.WORKER_ACTIVE_SESSIONS, f)})"),),
                kind="stat",
                width=6,
                height=4,
                description="Sessions the workers serve now (each worker reports its own).",
            ),
            Panel(
                "Session capacity",
                (Query(f"sum({sel(m.WORKER_CAPACITY, f)})"),),
                kind="stat",
                width=6,
                height=4,
                description="Sessions all workers accept (maxPerWorker x workers).",
            ),
            Panel(
                "Utilization",
                (
                    Query(
                        f"sum({sel(m.WORKER_ACTIVE_SESSIONS, f)}) / sum({sel(m.WORKER_CAPACITY, f)})"
                    ),
                ),
                kind="stat",
                unit="percentunit",
                threshold=0.9,
                width=6,
                height=4,
                description="Active sessions / capacity over the whole fleet.",
            ),
            Panel(
                "VoiceAgents not Ready",
                (Query(f"count({sel(m.OPERATOR_VOICEAGENT_READY, f)} == 0) or vector(0)"),),
                kind="stat",
                threshold=1,
                width=6,
                height=4,
                description="VoiceAgents whose Ready condition is not True.",
            ),
            Panel(
                "Sessions vs capacity per VoiceAgent",
                (
                    Query(f"sum by ({by}) ({sel(m.WORKER_ACTIVE_SESSIONS, f)})", f"{VA} sessions"),
                    Query(f"sum by ({by}) ({sel(m.WORKER_CAPACITY, f)})", f"{VA} capacity"),
                ),
                width=12,
                description="What the workers report: sessions served and sessions accepted.",
            ),
            Panel(
                "Workers desired / current / registered",
                (
                    Query(f"sum by ({by}) ({sel(m.AUTOSCALER_DESIRED, f)})", f"{VA} desired"),
                    Query(f"sum by ({by}) ({sel(m.AUTOSCALER_CURRENT, f)})", f"{VA} current"),
                    Query(
                        f"sum by ({by}) ({sel(m.WORKER_REGISTERED, f)})",
                        f"{VA} registered with LiveKit",
                    ),
                ),
                width=12,
                description="The autoscaler's wish, the Deployment's replicas, and the workers "
                "registered with LiveKit for dispatch.",
            ),
        ),
    )
    autoscaling = Row(
        "Autoscaling",
        (
            Panel(
                "Autoscaler decisions",
                (
                    Query(
                        f"sum by ({by}, direction) "
                        f"(increase({sel(m.AUTOSCALER_DECISIONS, f)}[{RATE}]))",
                        f"{VA} {{{{direction}}}}",
                    ),
                ),
                bars=True,
                width=12,
                description="Replica changes applied, by direction.",
            ),
            Panel(
                "Limited by maxReplicas",
                (Query(f"max by ({by}) ({sel(m.AUTOSCALER_LIMITED, f)})", VA),),
                width=12,
                description="1 while demand needs more workers than maxReplicas allows.",
            ),
        ),
    )
    latency = Row(
        "Latency",
        (
            latency_panel(
                "Dispatch latency",
                m.WORKER_DISPATCH_LATENCY,
                f,
                "From the job offer to the agent ready in the room:",
            ),
            latency_panel(
                "Turn latency",
                m.WORKER_TURN_LATENCY,
                f,
                "From the caller's end of speech to the first agent audio:",
            ),
            latency_panel(
                "Model first-audio latency",
                m.WORKER_FIRST_AUDIO_LATENCY,
                f,
                "The model's share of turn latency:",
            ),
        ),
    )
    resilience = Row(
        "Failover and reconnection",
        (
            Panel(
                "Failovers",
                (
                    Query(
                        f"sum by ({by}, outcome) (increase({sel(m.FAILOVERS, f)}[{RATE}]))",
                        f"{VA} {{{{outcome}}}}",
                    ),
                ),
                bars=True,
                width=8,
                description="Orphaned sessions handled, by outcome (gave_up means a dropped call).",
            ),
            Panel(
                "Failover latency p95",
                (
                    Query(
                        f"histogram_quantile(0.95, sum by ({by}, le) "
                        f"(rate({sel(m.FAILOVER_LATENCY, f, '_bucket')}[{RATE}])))",
                        VA,
                    ),
                ),
                unit="s",
                width=8,
                description="From an agent being lost to a new agent joining the same room.",
            ),
            Panel(
                "Reconnections",
                (
                    Query(
                        f"sum by ({by}, link) (rate({sel(m.WORKER_RECONNECTIONS, f)}[{RATE}]))",
                        f"{VA} {{{{link}}}}",
                    ),
                ),
                unit="ops",
                width=8,
                description="Reconnections per second, by link (livekit, realtime, room).",
            ),
        ),
    )
    errors = Row(
        "Errors",
        (
            Panel(
                "Sessions ended by outcome",
                (
                    Query(
                        f"sum by (outcome) (rate({sel(m.WORKER_SESSIONS_ENDED, f)}[{RATE}]))",
                        "{{outcome}}",
                    ),
                ),
                unit="ops",
                stack=True,
                width=8,
                description="error and drain_timeout are calls that ended badly.",
            ),
            Panel(
                "Model errors",
                (
                    Query(
                        f"sum by ({by}, recoverable) (rate({sel(m.WORKER_MODEL_ERRORS, f)}[{RATE}]))",
                        f"{VA} recoverable={{{{recoverable}}}}",
                    ),
                ),
                unit="ops",
                width=8,
                description="Errors the Realtime API reported.",
            ),
            Panel(
                "Reconcile errors",
                (
                    Query(
                        f"sum by ({by}, reason) "
                        f"(increase({sel(m.OPERATOR_RECONCILE_ERRORS, f)}[{RATE}]))",
                        f"{VA} {{{{reason}}}}",
                    ),
                ),
                bars=True,
                width=8,
                description="Reconciles that failed or were blocked (see the VoiceAgent's conditions).",
            ),
        ),
    )
    return Dashboard(
        uid="voicefleet-fleet",
        title="voicefleet / Fleet",
        description="Every VoiceAgent at a glance: sessions vs capacity, workers, autoscaling, "
        "latency against the 300 ms target, failover and errors.",
        rows=(capacity, autoscaling, latency, resilience, errors),
        variables=(
            Variable(
                "namespace",
                "Namespace",
                f"label_values({m.OPERATOR_VOICEAGENT_READY.name}, namespace)",
                multi=True,
            ),
        ),
        links=(
            _link("VoiceAgent drill-down", "voicefleet-voiceagent"),
            _link("Operator", "voicefleet-operator"),
        ),
    )


def _link(title: str, uid: str) -> JSON:
    return {
        "title": title,
        "type": "link",
        "url": f"/d/{uid}?${{__url_time_range}}",
        "icon": "dashboard",
        "keepTime": True,
        "includeVars": False,
        "targetBlank": False,
        "tags": [],
        "asDropdown": False,
        "tooltip": "",
    }


# --- per-VoiceAgent drill-down -----------------------------------------------------------
def voiceagent() -> Dashboard:
    o = ONE
    overview = Row(
        "Overview",
        (
            Panel(
                "Ready",
                (Query(f"max({sel(m.OPERATOR_VOICEAGENT_READY, o)})"),),
                kind="stat",
                width=4,
                height=4,
                description="1 when the VoiceAgent's Ready condition is True.",
            ),
            Panel(
                "Sessions",
                (Query(f"sum({sel(m.WORKER_ACTIVE_SESSIONS, o)})"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Capacity",
                (Query(f"sum({sel(m.WORKER_CAPACITY, o)})"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Workers",
                (Query(f"count({sel(m.WORKER_CAPACITY, o)})"),),
                kind="stat",
                width=4,
                height=4,
                description="Worker pods Prometheus scrapes.",
            ),
            Panel(
                "Desired workers",
                (Query(f"max({sel(m.AUTOSCALER_DESIRED, o)})"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Draining workers",
                (Query(f"sum({sel(m.WORKER_DRAINING, o)})"),),
                kind="stat",
                width=4,
                height=4,
                description="Workers finishing their calls after SIGTERM (rollout or scale-down).",
            ),
        ),
    )
    sessions = Row(
        "Sessions",
        (
            Panel(
                "Sessions per worker",
                (Query(f"sum by (pod) ({sel(m.WORKER_ACTIVE_SESSIONS, o)})", "{{pod}}"),),
                stack=True,
                width=12,
                description="Load per worker pod; LiveKit dispatches by active_sessions / maxPerWorker.",
            ),
            Panel(
                "Sessions vs capacity",
                (
                    Query(f"sum({sel(m.WORKER_ACTIVE_SESSIONS, o)})", "sessions (workers)"),
                    Query(f"sum({sel(m.WORKER_CAPACITY, o)})", "capacity (workers)"),
                    Query(f"max({sel(m.AUTOSCALER_SESSIONS, o)})", "sessions (autoscaler)"),
                    Query(f"max({sel(m.AUTOSCALER_CAPACITY, o)})", "capacity (autoscaler)"),
                ),
                width=12,
                description="The workers' own view and the autoscaler's (a worker that does not "
                "answer counts as full for the autoscaler).",
            ),
            Panel(
                "Sessions started and ended",
                (
                    Query(f"sum(rate({sel(m.WORKER_SESSIONS_STARTED, o)}[{RATE}]))", "started"),
                    Query(
                        f"sum by (outcome) (rate({sel(m.WORKER_SESSIONS_ENDED, o)}[{RATE}]))",
                        "ended {{outcome}}",
                    ),
                ),
                unit="ops",
                width=12,
            ),
            Panel(
                "Session duration",
                quantiles(m.WORKER_SESSION_DURATION, o),
                unit="s",
                width=12,
            ),
        ),
    )
    scaling = Row(
        "Workers and autoscaling",
        (
            Panel(
                "Workers desired / current / registered",
                (
                    Query(f"max({sel(m.AUTOSCALER_DESIRED, o)})", "desired"),
                    Query(f"max({sel(m.AUTOSCALER_CURRENT, o)})", "current"),
                    Query(f"sum({sel(m.WORKER_REGISTERED, o)})", "registered with LiveKit"),
                    Query(f"sum({sel(m.WORKER_DRAINING, o)})", "draining"),
                ),
                width=12,
            ),
            Panel(
                "Autoscaler decisions and limits",
                (
                    Query(
                        f"sum by (direction) (increase({sel(m.AUTOSCALER_DECISIONS, o)}[{RATE}]))",
                        "{{direction}}",
                    ),
                    Query(f"max({sel(m.AUTOSCALER_LIMITED, o)})", "limited by maxReplicas"),
                    Query(f"sum({sel(m.CALLS_WAITING, o)})", "calls waiting for a slot"),
                    Query(
                        f"sum(increase({sel(m.CALLS_UNPLACED, o)}[{RATE}]))",
                        "calls LiveKit could not place",
                    ),
                ),
                bars=True,
                width=12,
            ),
        ),
    )
    latency = Row(
        "Latency",
        (
            latency_panel(
                "Dispatch latency", m.WORKER_DISPATCH_LATENCY, o, "Job offer to agent ready:"
            ),
            latency_panel(
                "Turn latency", m.WORKER_TURN_LATENCY, o, "Caller's end of speech to agent audio:"
            ),
            latency_panel(
                "Model first-audio latency", m.WORKER_FIRST_AUDIO_LATENCY, o, "The model's share:"
            ),
            Panel(
                "Turn latency p95 per worker",
                (
                    Query(
                        "histogram_quantile(0.95, sum by (pod, le) "
                        f"(rate({sel(m.WORKER_TURN_LATENCY, o, '_bucket')}[{RATE}])))",
                        "{{pod}}",
                    ),
                ),
                unit="s",
                threshold=TURN_TARGET_SECONDS,
                width=12,
                description="A single slow worker stands out here (CPU starved, far from the model).",
            ),
            Panel(
                "Interruptions",
                (Query(f"sum(rate({sel(m.WORKER_INTERRUPTIONS, o)}[{RATE}]))", "interruptions"),),
                unit="ops",
                width=12,
                description="Agent answers cut short by the caller speaking over them.",
            ),
        ),
    )
    tools = Row(
        "Tools",
        (
            Panel(
                "Tool calls",
                (
                    Query(
                        f"sum by (tool, outcome) (rate({sel(m.WORKER_TOOL_CALLS, o)}[{RATE}]))",
                        "{{tool}} {{outcome}}",
                    ),
                ),
                unit="ops",
                width=12,
            ),
            Panel(
                "Tool call duration p95",
                (
                    Query(
                        "histogram_quantile(0.95, sum by (tool, le) "
                        f"(rate({sel(m.WORKER_TOOL_LATENCY, o, '_bucket')}[{RATE}])))",
                        "{{tool}}",
                    ),
                ),
                unit="s",
                width=12,
            ),
        ),
    )
    resilience = Row(
        "Failover, reconnection and errors",
        (
            Panel(
                "Orphaned sessions found",
                (
                    Query(
                        f"sum by (source) (increase({sel(m.ORPHANS_FOUND, o)}[{RATE}]))",
                        "{{source}}",
                    ),
                ),
                bars=True,
                width=8,
            ),
            Panel(
                "Failovers",
                (
                    Query(
                        f"sum by (outcome) (increase({sel(m.FAILOVERS, o)}[{RATE}]))",
                        "{{outcome}}",
                    ),
                ),
                bars=True,
                width=8,
            ),
            Panel(
                "Failover latency",
                quantiles(m.FAILOVER_LATENCY, o),
                unit="s",
                width=8,
            ),
            Panel(
                "Reconnections",
                (
                    Query(
                        f"sum by (link) (rate({sel(m.WORKER_RECONNECTIONS, o)}[{RATE}]))",
                        "{{link}}",
                    ),
                ),
                unit="ops",
                width=8,
            ),
            Panel(
                "Model errors",
                (
                    Query(
                        f"sum by (recoverable) (rate({sel(m.WORKER_MODEL_ERRORS, o)}[{RATE}]))",
                        "recoverable={{recoverable}}",
                    ),
                ),
                unit="ops",
                width=8,
            ),
            Panel(
                "Reconcile errors",
                (
                    Query(
                        f"sum by (reason) (increase({sel(m.OPERATOR_RECONCILE_ERRORS, o)}[{RATE}]))",
                        "{{reason}}",
                    ),
                ),
                bars=True,
                width=8,
            ),
        ),
    )
    telephony = Row(
        "Telephony (spec.telephony)",
        (
            Panel(
                "Calls by origin",
                (
                    Query(
                        f"sum by (origin) (increase({sel(m.WORKER_CALLERS, o)}[{RATE}]))",
                        "{{origin}}",
                    ),
                ),
                bars=True,
                width=8,
            ),
            Panel(
                "SIP objects on LiveKit",
                (Query(f"max by (kind) ({sel(m.TELEPHONY_OBJECTS, o)})", "{{kind}}"),),
                width=8,
            ),
            Panel(
                "Telephony syncs",
                (
                    Query(
                        f"sum by (result) (increase({sel(m.TELEPHONY_SYNCS, o)}[{RATE}]))",
                        "{{result}}",
                    ),
                ),
                bars=True,
                width=8,
            ),
        ),
    )
    on_node = f"* on (namespace, pod) group_left (node) {sel(m.WORKER_LIVEKIT_NODE, o)}"
    livekit_nodes = Row(
        "LiveKit nodes (multi-node LiveKit: docs/operations.md)",
        (
            Panel(
                "Workers by LiveKit node",
                (Query(f"count by (node) ({sel(m.WORKER_LIVEKIT_NODE, o)})", "{{node}}"),),
                description="The node each worker registered with: that node hands it its jobs.",
                width=8,
            ),
            Panel(
                "Dispatches by LiveKit node",
                (
                    Query(
                        f"sum by (node) (increase({sel(m.WORKER_SESSIONS_STARTED, o)}[{RATE}]) "
                        f"{on_node})",
                        "{{node}}",
                    ),
                ),
                description="Sessions started, by the node of the worker that got them. A "
                "node with more idle workers wins more jobs (docs/operations.md).",
                bars=True,
                width=8,
            ),
            Panel(
                "Reconnections by LiveKit node",
                (
                    Query(
                        f"sum by (node, link) (increase({sel(m.WORKER_RECONNECTIONS, o)}[{RATE}]) "
                        f"{on_node})",
                        "{{node}} {{link}}",
                    ),
                ),
                description="Reconnections by link, by the node each worker is registered "
                "with now: after a node loss, `livekit` shows the workers that registered "
                "again with the surviving nodes.",
                bars=True,
                width=8,
            ),
        ),
    )
    return Dashboard(
        uid="voicefleet-voiceagent",
        title="voicefleet / VoiceAgent",
        description="One VoiceAgent in depth: per-worker load, latency, tools, failover, errors.",
        rows=(overview, sessions, scaling, latency, tools, resilience, telephony, livekit_nodes),
        variables=(
            Variable(
                "namespace",
                "Namespace",
                f"label_values({m.OPERATOR_VOICEAGENT_READY.name}, namespace)",
            ),
            Variable(
                "voiceagent",
                "VoiceAgent",
                f'label_values({m.OPERATOR_VOICEAGENT_READY.name}{{namespace="$namespace"}}, voiceagent)',
            ),
        ),
        links=(_link("Fleet", "voicefleet-fleet"), _link("Operator", "voicefleet-operator")),
    )


# --- operator health ---------------------------------------------------------------------
def operator() -> Dashboard:
    f = FLEET
    by = "namespace, voiceagent"
    reconcile = Row(
        "Reconciles",
        (
            Panel(
                "Operator up",
                (Query('sum(up{job="voicefleet-operator"})'),),
                kind="stat",
                width=6,
                height=4,
                description="Operator replicas Prometheus scrapes (one is active, others stand by).",
            ),
            Panel(
                "VoiceAgents",
                (Query(f"count({sel(m.OPERATOR_VOICEAGENT_READY, f)})"),),
                kind="stat",
                width=6,
                height=4,
            ),
            Panel(
                "VoiceAgents Ready",
                (Query(f"sum({sel(m.OPERATOR_VOICEAGENT_READY, f)})"),),
                kind="stat",
                width=6,
                height=4,
            ),
            Panel(
                "Reconcile errors (1h)",
                (Query(f"sum(increase({sel(m.OPERATOR_RECONCILE_ERRORS, f)}[1h])) or vector(0)"),),
                kind="stat",
                threshold=1,
                width=6,
                height=4,
            ),
            Panel(
                "Reconciles by result",
                (
                    Query(
                        f"sum by (result) (rate({sel(m.OPERATOR_RECONCILES, f)}[{RATE}]))",
                        "{{result}}",
                    ),
                ),
                unit="ops",
                stack=True,
                width=12,
            ),
            Panel(
                "Reconcile latency",
                quantiles(m.OPERATOR_RECONCILE_DURATION, f),
                unit="s",
                width=12,
            ),
            Panel(
                "Reconcile errors by reason",
                (
                    Query(
                        f"sum by ({by}, reason) "
                        f"(increase({sel(m.OPERATOR_RECONCILE_ERRORS, f)}[{RATE}]))",
                        f"{VA} {{{{reason}}}}",
                    ),
                ),
                bars=True,
                width=12,
            ),
            Panel(
                "VoiceAgents not Ready",
                (Query(f"{sel(m.OPERATOR_VOICEAGENT_READY, f)} == 0", VA),),
                width=12,
                description="A series here is a VoiceAgent whose Ready condition is not True.",
            ),
        ),
    )
    autoscaler = Row(
        "Autoscaler",
        (
            Panel(
                "Worker scrape failures",
                (
                    Query(
                        f"sum by ({by}, error) "
                        f"(rate({sel(m.AUTOSCALER_SCRAPE_FAILURES, f)}[{RATE}]))",
                        f"{VA} {{{{error}}}}",
                    ),
                ),
                unit="ops",
                width=8,
                description="Worker /sessions reads that failed (a failed worker counts as full).",
            ),
            Panel(
                "Autoscaler tick duration",
                quantiles(m.AUTOSCALER_TICK, f),
                unit="s",
                width=8,
            ),
            Panel(
                "Worker targets down",
                (
                    Query(
                        'count by (namespace, voiceagent) (up{job="voicefleet-worker", '
                        f"{f}}} == 0) or sum by (namespace, voiceagent) "
                        f'(0 * up{{job="voicefleet-worker", {f}}})',
                        VA,
                    ),
                ),
                width=8,
                description="Worker pods Prometheus cannot scrape (0 when every worker answers).",
            ),
        ),
    )
    webhooks = Row(
        "LiveKit webhooks and failover",
        (
            Panel(
                "Webhook requests by result",
                (
                    Query(
                        f"sum by (result) (rate({sel(m.WEBHOOK_REQUESTS)}[{RATE}]))",
                        "{{result}}",
                    ),
                ),
                unit="reqps",
                stack=True,
                width=12,
                description="bad_signature or unknown_key: the LiveKit webhook key and the "
                "operator's credentials disagree, or someone else is posting.",
            ),
            Panel(
                "Orphaned sessions found by source",
                (
                    Query(
                        f"sum by (source) (increase({sel(m.ORPHANS_FOUND, f)}[{RATE}]))",
                        "{{source}}",
                    ),
                ),
                bars=True,
                width=12,
            ),
        ),
    )
    return Dashboard(
        uid="voicefleet-operator",
        title="voicefleet / Operator",
        description="The operator's health: reconciles, errors, autoscaler reads, webhooks.",
        rows=(reconcile, autoscaler, webhooks),
        variables=(
            Variable(
                "namespace",
                "Namespace",
                f"label_values({m.OPERATOR_VOICEAGENT_READY.name}, namespace)",
                multi=True,
            ),
        ),
        links=(
            _link("Fleet", "voicefleet-fleet"),
            _link("VoiceAgent drill-down", "voicefleet-voiceagent"),
        ),
    )


DASHBOARDS = {"fleet": fleet, "voiceagent": voiceagent, "operator": operator}


def dump(doc: JSON) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    from .metrics_doc import METRICS_DOC, render_metrics_doc

    out = {
        DASHBOARD_DIR / f"{name}.json": dump(render(build())) for name, build in DASHBOARDS.items()
    }
    out[METRICS_DOC] = render_metrics_doc()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = p.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
