"""Pure rendering: a parsed VoiceAgent spec and the operator's settings -> desired objects.

Every object carries the VoiceAgent as its controller owner reference (deleting the
VoiceAgent garbage-collects it) and the `app.kubernetes.io/*` labels. The Deployment is
rendered *without* `spec.replicas`: who owns replicas depends on the autoscaling mode
(`desired_replicas`), and the handlers apply them under a separate field manager.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from voicefleet_contract import (
    ANNOTATION_CONFIG_HASH,
    API_VERSION,
    CONFIG_FILE_KEY,
    CONFIG_MOUNT_PATH,
    CONFIG_VOLUME,
    GROUP,
    HEALTH_PORT,
    HEALTH_PORT_NAME,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
    MANAGED_BY,
    METRICS_PORT,
    METRICS_PORT_NAME,
    READY_PATH,
    WORKER_CONTAINER,
    WORKER_KEYS_RESUME,
    WORKER_KEYS_TOKEN,
    Env,
)
from voicefleet_contract.capacity import DEFAULT_WORKER_REQUESTS

from .fleet import ChildNames, selector_labels
from .settings import Settings
from .spec import DRAIN_MARGIN_SECONDS, SpecError, VoiceAgentSpec

# On the worker Deployment: the autoscaling mode it was last applied in, so a reconcile
# knows whether an HPA or ScaledObject of another mode can be left to delete.
ANNOTATION_AUTOSCALING_MODE: Final = f"{GROUP}/autoscaling-mode"
# On the pod template: a keyed digest of the Secret values the workers use
# (reconcile.secrets_hash), so that rotating a key rolls them as a spec change does.
ANNOTATION_SECRETS_HASH: Final = f"{GROUP}/secrets-hash"
DEFAULT_RESOURCES: Final = {"requests": dict(DEFAULT_WORKER_REQUESTS)}
MAX_SURGE: Final = "25%"  # a percentage rounds up, so a rollout always surges >= 1 pod
# The worker image's user (worker/Dockerfile: USER 10001:10001). A numeric runAsUser also
# lets the kubelet verify runAsNonRoot for a custom image whose USER is a name.
WORKER_UID: Final = 10001
# Workers pass Pod Security `restricted` unless the VoiceAgent's template says otherwise:
# its securityContext / containerSecurityContext are merged over these key by key (a key
# it sets replaces ours whole, e.g. `capabilities`).
DEFAULT_POD_SECURITY_CONTEXT: Final[dict[str, Any]] = {
    "runAsNonRoot": True,
    "runAsUser": WORKER_UID,
    "runAsGroup": WORKER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
DEFAULT_CONTAINER_SECURITY_CONTEXT: Final[dict[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class Owner:
    """The VoiceAgent that owns the rendered objects."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Any) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Children:
    configmap: dict[str, Any]
    service: dict[str, Any]
    pdb: dict[str, Any]
    deployment: dict[str, Any]
    config_hash: str
    network_policy: dict[str, Any] | None = None  # None: the operator renders none

    def in_apply_order(self) -> tuple[dict[str, Any], ...]:
        # The ConfigMap first: new pods mount it.
        extra = (self.network_policy,) if self.network_policy is not None else ()
        return (self.configmap, self.service, self.pdb, self.deployment, *extra)


def labels(name: str, component: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "voicefleet",
    }


def agent_json(spec: VoiceAgentSpec) -> str:
    return spec.config.to_json()


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _meta(spec: VoiceAgentSpec, owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": labels(spec.name, component),
        "ownerReferences": [owner.reference()],
    }


def render_configmap(spec: VoiceAgentSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, owner, ChildNames.of(spec.name).configmap, "config"),
        "data": {CONFIG_FILE_KEY: agent_json(spec)},
    }


def render_service(spec: VoiceAgentSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, owner, ChildNames.of(spec.name).service, "metrics"),
        "spec": {
            # Headless: Prometheus and the autoscaler address each worker, never a VIP.
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # a starting or draining worker still reports
            "selector": selector_labels(spec.name),
            "ports": [
                {
                    "name": METRICS_PORT_NAME,
                    "port": METRICS_PORT,
                    "targetPort": METRICS_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def render_pdb(spec: VoiceAgentSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec, owner, ChildNames.of(spec.name).pdb, "worker"),
        "spec": {
            "selector": {"matchLabels": selector_labels(spec.name)},
            "maxUnavailable": spec.disruption.maxUnavailable,
            # A crash-looping worker serves no calls; let node drains evict it.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


NETWORK_POLICY_API: Final = "networking.k8s.io/v1"


def render_network_policy(
    spec: VoiceAgentSpec, owner: Owner, settings: Settings
) -> dict[str, Any] | None:
    """Who may reach the workers (ingress only): the rules the operator was started with
    (`--worker-ingress`, the chart's: the operator's pods and Prometheus, to the metrics
    port), in the VoiceAgent's own namespace, whichever namespace that is. None: off."""
    if settings.worker_ingress is None:
        return None
    return {
        "apiVersion": NETWORK_POLICY_API,
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, owner, ChildNames.of(spec.name).network_policy, "worker"),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(spec.name)},
            "policyTypes": ["Ingress"],
            "ingress": copy.deepcopy(list(settings.worker_ingress)),
        },
    }


WORKER_KEYS: Final = (WORKER_KEYS_RESUME, WORKER_KEYS_TOKEN)


def new_worker_key(key: str) -> str:
    """A fresh value for a worker-keys entry: 32 random bytes, base64 (the resume key is
    an AES-256 key; the token is as hard to guess)."""
    del key  # both are the same kind of value
    return base64.b64encode(secrets.token_bytes(32)).decode()


def render_worker_keys(
    spec: VoiceAgentSpec, owner: Owner | None, missing: Collection[str]
) -> dict[str, Any]:
    """The apply body of the worker-keys Secret with fresh values for the `missing` keys
    only (keys already there are never replaced: running workers hold them). `owner`
    only when the operator creates it (a Secret the user made stays theirs)."""
    meta: dict[str, Any] = {
        "name": ChildNames.of(spec.name).keys,
        "namespace": spec.namespace,
        "labels": labels(spec.name, "worker-keys"),
    }
    if owner is not None:
        meta["ownerReferences"] = [owner.reference()]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {
            k: base64.b64encode(new_worker_key(k).encode()).decode()
            for k in WORKER_KEYS
            if k in missing
        },
    }


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def render_env(spec: VoiceAgentSpec, settings: Settings) -> list[dict[str, Any]]:
    lk = spec.livekit
    env: list[dict[str, Any]] = [
        {"name": Env.CONFIG_FILE, "value": f"{CONFIG_MOUNT_PATH}/{CONFIG_FILE_KEY}"},
        _field_env(Env.POD_NAME, "metadata.name"),
        _field_env(Env.POD_NAMESPACE, "metadata.namespace"),
        _field_env(Env.POD_IP, "status.podIP"),
        {"name": Env.METRICS_PORT, "value": str(METRICS_PORT)},
        {"name": Env.HEALTH_PORT, "value": str(HEALTH_PORT)},
        {"name": Env.LOG_FORMAT, "value": settings.worker_log_format},
        {"name": Env.LIVEKIT_URL, "value": lk.url},
        _secret_env(Env.LIVEKIT_API_KEY, lk.api_key_ref.name, lk.api_key_ref.key),
        _secret_env(Env.LIVEKIT_API_SECRET, lk.api_secret_ref.name, lk.api_secret_ref.key),
        # In this place, where it always was: moving it would roll every running fleet.
        *(
            [_secret_env(Env.OPENAI_API_KEY, spec.apiKeySecret.name, spec.apiKeySecret.key)]
            if spec.apiKeySecret
            else []
        ),
        # Tool headers (agent.json names the variable, never the value).
        *(_secret_env(h.env, h.ref.name, h.ref.key) for h in spec.tool_headers),
        _secret_env(Env.RESUME_KEY, ChildNames.of(spec.name).keys, WORKER_KEYS_RESUME),
    ]
    if settings.sessions_auth:
        env.append(
            _secret_env(Env.SESSIONS_TOKEN, ChildNames.of(spec.name).keys, WORKER_KEYS_TOKEN)
        )
    if spec.agent.module is not None:
        env.append({"name": Env.AGENT, "value": spec.agent.module})
    if spec.agent.jobExecutor is not None:
        env.append({"name": Env.JOB_EXECUTOR, "value": spec.agent.jobExecutor})
    user = [dict(e) for e in spec.template.env]
    if settings.otlp_endpoint and all(e["name"] != Env.OTLP_ENDPOINT for e in user):
        env.append({"name": Env.OTLP_ENDPOINT, "value": settings.otlp_endpoint})
    return env + user


def security_context(defaults: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    """The template's security context over our defaults, top-level key by key: setting
    `fsGroup` keeps `restricted`; setting `runAsUser` or `capabilities` replaces ours."""
    return {**copy.deepcopy(defaults), **(user or {})}


def _with_restricted(container: dict[str, Any]) -> dict[str, Any]:
    """A user's init or sidecar container with the worker container's default security
    context under its own (key by key): it passes Pod Security `restricted` unless it
    says otherwise."""
    ctx = security_context(DEFAULT_CONTAINER_SECURITY_CONTEXT, container.get("securityContext"))
    return {**copy.deepcopy(container), "securityContext": ctx}


def _probe(
    period: int, failures: int, path: str = "/", port: str = HEALTH_PORT_NAME, timeout: int = 3
) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def render_pod_template(
    spec: VoiceAgentSpec, settings: Settings, hash_: str, secrets: str | None = None
) -> dict[str, Any]:
    t = spec.template
    image = t.image or settings.default_image
    if not image:
        raise SpecError(
            "spec.template.image", "no image: set it, or the operator's --default-image"
        )
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": image,
        "env": render_env(spec, settings),
        "ports": [
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": HEALTH_PORT_NAME, "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        # Start-up (warm job processes, first LiveKit registration) may take a while;
        # liveness only starts counting once the worker came up.
        "startupProbe": _probe(2, 150),
        # Ready means registered with LiveKit (READY_PATH), not just "process up". Quick,
        # one failure: a hung worker turning not ready is failover's first witness of the
        # hang (1-2 s). A missed answer costs only the operator's fresh /sessions read (the
        # second witness, 1 s), never a call, and nothing routes by a worker's readiness;
        # a worker ends as hung only when that read gets no answer either.
        "readinessProbe": _probe(1, 1, READY_PATH, METRICS_PORT_NAME, timeout=1),
        # Generous: livekit-agents reconnects to LiveKit with backoff for ~2 minutes before
        # its health turns 503; a restart would drop every call the worker still serves.
        "livenessProbe": _probe(10, 12),
        "resources": t.resources if t.resources is not None else DEFAULT_RESOURCES,
        "securityContext": security_context(
            DEFAULT_CONTAINER_SECURITY_CONTEXT, t.containerSecurityContext
        ),
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT_PATH, "readOnly": True},
            *t.volumeMounts,
        ],
    }
    pull_policy = t.imagePullPolicy or settings.image_pull_policy
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
        **t.annotations,
        ANNOTATION_CONFIG_HASH: hash_,
    }
    if secrets:
        annotations[ANNOTATION_SECRETS_HASH] = secrets
    pod: dict[str, Any] = {
        "containers": [container, *(_with_restricted(c) for c in t.containers)],
        "volumes": [
            {
                "name": CONFIG_VOLUME,
                "configMap": {"name": ChildNames.of(spec.name).configmap},
            },
            *t.volumes,
        ],
        # The worker drains its sessions on SIGTERM for up to drainTimeoutSeconds; the
        # margin covers shutdown after the last session ends.
        "terminationGracePeriodSeconds": spec.drain_timeout_seconds + DRAIN_MARGIN_SECONDS,
        "enableServiceLinks": False,
        # Workers need no Kubernetes API; mount a token only for an explicit account.
        "automountServiceAccountToken": t.serviceAccountName is not None,
        "securityContext": security_context(DEFAULT_POD_SECURITY_CONTEXT, t.securityContext),
    }
    optional = {
        "serviceAccountName": t.serviceAccountName,
        "priorityClassName": t.priorityClassName,
        "nodeSelector": t.nodeSelector or None,
        "tolerations": list(t.tolerations) or None,
        "affinity": t.affinity,
        "topologySpreadConstraints": list(t.topologySpreadConstraints) or None,
        "imagePullSecrets": [{"name": n} for n in t.imagePullSecrets] or None,
        "initContainers": [_with_restricted(c) for c in t.initContainers] or None,
    }
    pod.update({k: v for k, v in optional.items() if v is not None})
    return {
        "metadata": {
            "labels": {**t.labels, **labels(spec.name, "worker")},
            "annotations": annotations,
        },
        "spec": pod,
    }


def render_deployment(
    spec: VoiceAgentSpec, owner: Owner, settings: Settings, hash_: str, secrets: str | None = None
) -> dict[str, Any]:
    meta = _meta(spec, owner, ChildNames.of(spec.name).deployment, "worker")
    meta["annotations"] = {ANNOTATION_AUTOSCALING_MODE: spec.autoscaling.mode}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector_labels(spec.name)},
            "strategy": {
                "type": "RollingUpdate",
                # Never take a worker away before its replacement is Ready.
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": MAX_SURGE},
            },
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "template": render_pod_template(spec, settings, hash_, secrets),
        },
    }


def render_children(
    spec: VoiceAgentSpec, owner: Owner, settings: Settings, secrets: str | None = None
) -> Children:
    """`secrets`: the hash of the Secret values the workers use (None: no annotation)."""
    hash_ = config_hash(agent_json(spec))
    return Children(
        configmap=render_configmap(spec, owner),
        service=render_service(spec, owner),
        pdb=render_pdb(spec, owner),
        deployment=render_deployment(spec, owner, settings, hash_, secrets),
        config_hash=hash_,
        network_policy=render_network_policy(spec, owner, settings),
    )


def desired_replicas(spec: VoiceAgentSpec, current: int | None) -> int | None:
    """Deployment replicas the operator applies, or None when it must not own them.

    - none: `spec.replicas` (what `kubectl scale va` writes), else minReplicas.
    - builtin: the session autoscaler (autoscale_loop) owns replicas once the Deployment
      exists; the reconciler seeds the start value and enforces [minReplicas, maxReplicas]
      when the bounds change under it.
    - hpa/keda: the external autoscaler owns replicas; the operator only seeds
      minReplicas when the Deployment does not exist yet (`current` is None).
    """
    a = spec.autoscaling
    wanted = spec.replicas if spec.replicas is not None else a.minReplicas
    if a.mode == "none":
        return wanted
    if a.mode == "builtin":
        if current is None:
            return max(a.minReplicas, min(a.maxReplicas, wanted))
        clamped = max(a.minReplicas, min(a.maxReplicas, current))
        return clamped if clamped != current else None
    return a.minReplicas if current is None else None


def render_replicas_patch(spec: VoiceAgentSpec, replicas: int) -> dict[str, Any]:
    """The apply body of the replicas field manager: nothing but spec.replicas."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ChildNames.of(spec.name).deployment, "namespace": spec.namespace},
        "spec": {"replicas": replicas},
    }
