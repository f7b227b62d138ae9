"""The operator's own configuration (what `cmd.py` parses from flags and env)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

LogFormat = Literal["json", "text"]
DEFAULT_IMAGE: Final = "ghcr.io/voicefleet/worker:0.1.0"
FIELD_MANAGER: Final = "voicefleet-operator"
# A second field manager that owns nothing but the Deployment's spec.replicas, so the
# operator can let go of replicas (hpa/keda modes) without the main apply deleting them.
REPLICAS_FIELD_MANAGER: Final = "voicefleet-operator-replicas"
# Adds missing keys to a worker-keys Secret (never the keys already there).
WORKER_KEYS_FIELD_MANAGER: Final = "voicefleet-operator-keys"


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace (cluster-wide)
    default_image: str = DEFAULT_IMAGE
    image_pull_policy: str | None = None  # None: Kubernetes' default for the tag
    log_format: LogFormat = "json"  # the operator's own logs
    worker_log_format: LogFormat = "json"  # VOICEFLEET_LOG_FORMAT on workers
    bind_address: str = "0.0.0.0"
    metrics_port: int = 8080  # operator's /metrics
    health_port: int = 8081  # kopf's liveness endpoint /healthz
    # The timer backstop per VoiceAgent (handlers.py): a full reconcile at least this often
    # (jittered, 80-100 % of it), though child watch events repair drift within a second;
    # and, every retry_seconds, a full reconcile of one whose last had a problem (a
    # Secret may have appeared) or failed, a status refresh of one not settled.
    resync_seconds: float = 600.0
    retry_seconds: float = 30.0
    otlp_endpoint: str | None = None  # passed to workers as OTEL_EXPORTER_OTLP_ENDPOINT
    kubeconfig: str | None = None  # None: in-cluster, then ~/.kube/config
    # Where KEDA's Prometheus trigger (autoscaling mode keda) reads the sessions metric.
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    # Blocking API calls (reconciles, autoscaler writes) run in threads: how many at once,
    # and as many pooled connections. asyncio's default (cores + 4) queues a burst of new
    # VoiceAgents behind a handful of threads (bench/reconcile.py).
    api_threads: int = 32
    webhook_port: int = 8090  # LiveKit webhooks (POST /livekit/webhook); 0: none
    failover_sweep_seconds: float = 10.0  # the LiveKit API sweep, failover's backstop
    # kopf peering (HA): the name of the KopfPeering (namespaced) or ClusterKopfPeering
    # (cluster-wide) object the replicas share; one is active, the others stand by.
    # None: standalone, one operator replica, no peering objects needed.
    peering: str | None = None
    # The operator's own pod (POD_NAMESPACE, POD_NAME from the downward API), labelled
    # while it is the active replica under peering (active.py). None: not in a pod.
    pod: tuple[str, str] | None = None
    # Workers' /sessions answer only with the bearer token from the VoiceAgent's
    # worker-keys Secret (VOICEFLEET_SESSIONS_TOKEN); the feed sends it. Off: open.
    sessions_auth: bool = True
    # NetworkPolicy ingress rules for every VoiceAgent's worker pods (one NetworkPolicy
    # per VoiceAgent, in its namespace). None: the operator renders none (and removes the
    # ones it rendered before, at the next resync).
    worker_ingress: tuple[dict[str, Any], ...] | None = None
    # The custom metrics API (custom.metrics.k8s.io: voicefleet_worker_active_sessions of
    # worker pods, for mode hpa) over HTTPS on this port, for the API server's
    # aggregation layer; 0: off. Its serving certificate: tls.crt, tls.key in the dir.
    custom_metrics_port: int = 0
    custom_metrics_cert_dir: str = "/etc/voicefleet/custom-metrics-tls"
    # A first look on a live cluster: the autoscaler and failover decide as always and log
    # each action they would take (and count it in their metrics), but write nothing: no
    # replicas, deletion costs, status or Events; no dispatches, no pods ended. The
    # reconciler works as always (a spec's fleet is what it asks for).
    dry_run: bool = False

    @property
    def standalone(self) -> bool:
        return self.peering is None
