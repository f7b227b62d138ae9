"""Command-line flags, each with an environment default (VOICEFLEET_OPERATOR_<FLAG>)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

from .settings import DEFAULT_IMAGE, LogFormat, Settings

ENV_PREFIX = "VOICEFLEET_OPERATOR_"


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.upper().replace("-", "_")


def parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    d = Settings()

    def default(flag: str, value: Any) -> Any:
        return env.get(_env_name(flag), value)

    p = argparse.ArgumentParser(
        prog="voicefleet-operator",
        description="Reconciles VoiceAgent resources into LiveKit agent worker fleets. "
        f"Every flag defaults to the environment variable {ENV_PREFIX}<FLAG>.",
    )
    p.add_argument(
        "--namespaces",
        default=default("namespaces", ""),
        help="comma-separated namespaces to watch; empty: all namespaces",
    )
    p.add_argument("--default-image", default=default("default-image", DEFAULT_IMAGE))
    p.add_argument(
        "--image-pull-policy",
        default=default("image-pull-policy", ""),
        choices=["", "Always", "IfNotPresent", "Never"],
        help="worker pull policy unless a VoiceAgent sets one",
    )
    p.add_argument(
        "--log-format", default=default("log-format", d.log_format), choices=["json", "text"]
    )
    p.add_argument(
        "--worker-log-format",
        default=default("worker-log-format", d.worker_log_format),
        choices=["json", "text"],
    )
    p.add_argument("--bind-address", default=default("bind-address", d.bind_address))
    p.add_argument("--metrics-port", type=int, default=int(default("metrics-port", d.metrics_port)))
    p.add_argument("--health-port", type=int, default=int(default("health-port", d.health_port)))
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=float(default("resync-seconds", d.resync_seconds)),
        help="reconcile every VoiceAgent in full about this often (jittered: 80-100 %% of "
        "it); watch events of its children repair drift in between",
    )
    p.add_argument(
        "--retry-seconds",
        type=float,
        default=float(default("retry-seconds", d.retry_seconds)),
        help="how often a VoiceAgent that is blocked (invalid spec, missing Secret) or whose "
        "reconcile failed is reconciled again, and one not yet settled (not Ready, rolling "
        "out, degraded) has its status refreshed",
    )
    p.add_argument(
        "--otlp-endpoint",
        default=default("otlp-endpoint", env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")),
        help="OTLP endpoint passed to workers",
    )
    p.add_argument(
        "--webhook-port",
        type=int,
        default=int(default("webhook-port", d.webhook_port)),
        help="port for LiveKit webhooks (POST /livekit/webhook) on --bind-address; 0: off",
    )
    p.add_argument(
        "--failover-sweep-seconds",
        type=float,
        default=float(default("failover-sweep-seconds", d.failover_sweep_seconds)),
        help="how often failover lists LiveKit rooms as the backstop for lost sessions",
    )
    p.add_argument(
        "--prometheus-url",
        default=default("prometheus-url", d.prometheus_url),
        help="Prometheus that KEDA's trigger queries (autoscaling mode keda)",
    )
    p.add_argument(
        "--api-threads",
        type=int,
        default=int(default("api-threads", d.api_threads)),
        help="blocking Kubernetes API calls in flight at once (reconciles, autoscaler writes)",
    )
    p.add_argument("--kubeconfig", default=default("kubeconfig", env.get("KUBECONFIG", "")))
    p.add_argument(
        "--peering",
        default=default("peering", ""),
        help="HA: the kopf peering object's name (KopfPeering per watched namespace, or "
        "ClusterKopfPeering cluster-wide); one replica is active, the others stand by. "
        "Empty: standalone",
    )
    p.add_argument(
        "--sessions-auth",
        choices=("true", "false"),
        default=str(default("sessions-auth", "true" if d.sessions_auth else "false")).lower(),
        help="workers' /sessions (room names) answer only with the bearer token of the "
        "VoiceAgent's worker-keys Secret, which the operator sends (default true)",
    )
    p.add_argument(
        "--worker-ingress",
        type=worker_ingress,
        default=str(default("worker-ingress", "")),  # a string: argparse applies `type`
        help="NetworkPolicy ingress rules (a JSON list) for every VoiceAgent's worker pods: "
        "the operator renders one NetworkPolicy per VoiceAgent with them. Empty: none "
        "(the chart passes the operator's pods and Prometheus, to the metrics port)",
    )
    p.add_argument(
        "--custom-metrics-port",
        type=int,
        default=int(default("custom-metrics-port", d.custom_metrics_port)),
        help="serve the custom metrics API (custom.metrics.k8s.io v1beta2/v1beta1: "
        "voicefleet_worker_active_sessions of worker pods, what autoscaling mode hpa's HPA "
        "reads) over HTTPS on this port of --bind-address, for the API server's aggregation "
        "layer (an APIService); 0: off (default), e.g. when prometheus-adapter serves it",
    )
    p.add_argument(
        "--custom-metrics-cert-dir",
        default=default("custom-metrics-cert-dir", d.custom_metrics_cert_dir),
        help="the custom metrics API's serving certificate: tls.crt and tls.key here",
    )
    p.add_argument(
        "--dry-run",
        choices=("true", "false"),
        default=str(default("dry-run", "true" if d.dry_run else "false")).lower(),
        help="the autoscaler and failover log each action they would take (scale a fleet, "
        "re-dispatch a lost call, end a hung worker) and take none; the reconciler works as "
        "always. For a first look on a live cluster (default false)",
    )
    return p


def worker_ingress(raw: str) -> tuple[dict[str, Any], ...] | None:
    """`--worker-ingress`: a JSON list of NetworkPolicyIngressRule objects, or empty."""
    if not raw.strip():
        return None
    try:
        rules = json.loads(raw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--worker-ingress: not JSON: {e}") from None
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise argparse.ArgumentTypeError(
            "--worker-ingress: must be a JSON list of NetworkPolicy ingress rules (objects)"
        )
    for i, r in enumerate(rules):
        unknown = set(r) - {"from", "ports"}
        if unknown:
            raise argparse.ArgumentTypeError(
                f"--worker-ingress[{i}]: unknown fields {sorted(unknown)} (from, ports)"
            )
        for key in ("from", "ports"):
            if key in r and not isinstance(r[key], list):
                raise argparse.ArgumentTypeError(f"--worker-ingress[{i}].{key}: must be a list")
    return tuple(rules)


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    args = parser(env).parse_args(argv)
    pod_ns, pod_name = env.get("POD_NAMESPACE", ""), env.get("POD_NAME", "")
    namespaces = tuple(n.strip() for n in args.namespaces.split(",") if n.strip())
    return Settings(
        namespaces=namespaces,
        default_image=args.default_image,
        image_pull_policy=args.image_pull_policy or None,
        log_format=cast(LogFormat, args.log_format),
        worker_log_format=cast(LogFormat, args.worker_log_format),
        bind_address=args.bind_address,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        resync_seconds=args.resync_seconds,
        retry_seconds=args.retry_seconds,
        otlp_endpoint=args.otlp_endpoint or None,
        prometheus_url=args.prometheus_url,
        kubeconfig=args.kubeconfig or None,
        peering=args.peering or None,
        pod=(pod_ns, pod_name) if pod_ns and pod_name else None,
        webhook_port=args.webhook_port,
        failover_sweep_seconds=args.failover_sweep_seconds,
        api_threads=max(1, args.api_threads),
        sessions_auth=args.sessions_auth == "true",
        worker_ingress=args.worker_ingress,
        custom_metrics_port=args.custom_metrics_port,
        custom_metrics_cert_dir=args.custom_metrics_cert_dir,
        dry_run=args.dry_run == "true",
    )
