"""The contract between voicefleet's operator and its workers.

One source of truth for every name both sides must spell the same way: the API group,
labels, environment variables, ports, mount paths and the agent configuration file. The
operator renders pod templates from these; the worker reads its configuration through
them; `tests/test_contract.py` renders a pod template and feeds it to the worker's loader.
"""

import re
from typing import Final

GROUP: Final = "voicefleet.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "VoiceAgent"
PLURAL: Final = "voiceagents"

# Labels on every object the operator owns; the selector uses the instance label.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
APP_NAME: Final = "voicefleet-worker"
MANAGED_BY: Final = "voicefleet-operator"

# Pod-template annotation carrying the hash of the rendered agent configuration: a spec
# change changes the hash, which rolls the workers.
ANNOTATION_CONFIG_HASH: Final = f"{GROUP}/config-hash"
POD_DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
# On the operator's own pod while it is the active replica (HA): the chart's webhook
# Service selects it, so LiveKit's webhooks reach the replica that acts on them.
LABEL_OPERATOR_ACTIVE: Final = f"{GROUP}/active"

# Ports a worker serves (on every address of its pod, see Env.BIND_ADDRESS).
METRICS_PORT: Final = 9464  # Prometheus /metrics and /sessions (voicefleet's own)
HEALTH_PORT: Final = 8081  # livekit-agents' health server: GET / is 200 or 503
DEFAULT_BIND_ADDRESS: Final = "0.0.0.0"
METRICS_PORT_NAME: Final = "metrics"
HEALTH_PORT_NAME: Final = "health"
# Readiness, on the metrics port: 200 only once the worker is registered with LiveKit (a
# full worker stays ready). livekit-agents' own health (`/` on HEALTH_PORT) answers 200
# before registration, so a new pod in a rollout would be Ready while LiveKit cannot yet
# dispatch to it; it stays the liveness and startup probe.
READY_PATH: Final = "/ready"

# Where the operator mounts the rendered agent configuration (a ConfigMap key).
CONFIG_MOUNT_PATH: Final = "/etc/voicefleet"
CONFIG_VOLUME: Final = "agent-config"  # the pod volume that holds it
WORKER_CONTAINER: Final = "agent"  # the worker's container in its pod
CONFIG_FILE_KEY: Final = "agent.json"

# The Secret the operator creates per VoiceAgent (`<name>-worker-keys`, owned by it) for
# what only its workers and the operator may know; never overwritten once there.
WORKER_KEYS_SUFFIX: Final = "-worker-keys"
WORKER_KEYS_RESUME: Final = "resumeKey"  # 32 random bytes, base64: seals the resume summary
WORKER_KEYS_TOKEN: Final = "sessionsToken"  # the bearer token of a worker's /sessions


class Env:
    """Environment variables the operator sets on worker containers."""

    CONFIG_FILE: Final = "VOICEFLEET_CONFIG"  # path of agent.json
    POD_NAME: Final = "POD_NAME"
    POD_NAMESPACE: Final = "POD_NAMESPACE"
    # The pod's own address (status.podIP): logged, and where the operator reaches the
    # worker's /sessions. Servers do not bind it (see BIND_ADDRESS).
    POD_IP: Final = "POD_IP"
    # Where the worker's servers listen; default all addresses (0.0.0.0): the pod's own
    # network namespace isolates them, and `kubectl port-forward`, sidecars and probes need
    # more than the pod IP. `::` for an IPv6-only cluster.
    BIND_ADDRESS: Final = "VOICEFLEET_BIND_ADDRESS"
    METRICS_PORT: Final = "VOICEFLEET_METRICS_PORT"
    HEALTH_PORT: Final = "VOICEFLEET_HEALTH_PORT"
    LOG_FORMAT: Final = "VOICEFLEET_LOG_FORMAT"  # json | text
    LIVEKIT_URL: Final = "LIVEKIT_URL"
    LIVEKIT_API_KEY: Final = "LIVEKIT_API_KEY"  # always a secretKeyRef
    LIVEKIT_API_SECRET: Final = "LIVEKIT_API_SECRET"  # always a secretKeyRef
    OPENAI_API_KEY: Final = "OPENAI_API_KEY"  # always a secretKeyRef
    OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
    # Where jobs run: `process` (livekit-agents' job processes) or `thread`; see
    # docs/worker.md for the measured trade-off. From spec.agent.jobExecutor when set,
    # else the image's own default.
    JOB_EXECUTOR: Final = "VOICEFLEET_JOB_EXECUTOR"
    # Bring your own agent: `<module>[:<attribute>]`, a livekit-agents agent module run
    # unchanged (docs/worker.md). From spec.agent.module when set, else a custom image's ENV.
    AGENT: Final = "VOICEFLEET_AGENT"
    # From the worker-keys Secret the operator makes per VoiceAgent (WORKER_KEYS_*):
    RESUME_KEY: Final = "VOICEFLEET_RESUME_KEY"  # AES-256 key (base64) sealing the summary
    SESSIONS_TOKEN: Final = "VOICEFLEET_SESSIONS_TOKEN"  # bearer token for /sessions


JOB_EXECUTORS: Final = ("process", "thread")
# `<module>[:<attribute>]`: a dotted Python module path, optionally one attribute in it.
AGENT_MODULE_RE: Final = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?$"
)
MAX_AGENT_MODULE: Final = 255

SECRET_ENV: Final = frozenset(
    {
        Env.LIVEKIT_API_KEY,
        Env.LIVEKIT_API_SECRET,
        Env.OPENAI_API_KEY,
        Env.RESUME_KEY,
        Env.SESSIONS_TOKEN,
    }
)
"""Env vars that carry secrets: never a literal `value`, never logged."""
