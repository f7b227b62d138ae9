"""One reconcile of one VoiceAgent: fetch, render, apply, write status.

Synchronous and free of kopf, so it runs in a worker thread and tests drive it with a fake
`KubeApi`. Order matters for "nothing running is changed": the spec is parsed and the
Secrets are checked *before* anything is applied; any problem becomes a condition (and an
Event, once) while the existing children stay as they are.

Replicas are owned per autoscaling mode (see `render.desired_replicas`) by a separate
field manager (`REPLICAS_FIELD_MANAGER`), so the main apply never carries
`spec.replicas` once the Deployment exists and an HPA, KEDA or `kubectl scale` on the
Deployment is never fought by the main manager.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voicefleet_contract import API_VERSION, KIND

from .kube import KubeApi, KubeError, path
from .render import (
    ChildNames,
    Owner,
    desired_replicas,
    render_children,
    render_replicas_patch,
    selector_string,
)
from .render_autoscaler import (
    HPA_API,
    KEDA_API,
    KEDA_GROUP_PATH,
    render_hpa,
    render_scaled_object,
)
from .settings import FIELD_MANAGER, REPLICAS_FIELD_MANAGER, Settings
from .spec import SecretKeyRef, SpecError, VoiceAgentSpec, parse_spec
from .status import Observation, Problem, Reason, compute_status, ready_condition, status_changed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    body: dict[str, Any] | None = None  # the VoiceAgent (None: it is gone)
    status: dict[str, Any] | None = None
    problem: Problem | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return bool(self.status) and ready_condition(self.status or {}).get("status") == "True"


def va_path(namespace: str, name: str) -> str:
    return path(API_VERSION, KIND, namespace, name)


def check_secrets(kube: KubeApi, spec: VoiceAgentSpec) -> Problem | None:
    """Each referenced Secret exists and has the key; values are never looked at."""
    refs: list[tuple[SecretKeyRef, str]] = [
        (spec.livekit.api_key_ref, "spec.livekit.apiKeyKey"),
        (spec.livekit.api_secret_ref, "spec.livekit.apiSecretKey"),
        (spec.apiKeySecret, "spec.model.apiKeySecret.key"),
    ]
    seen: dict[str, dict[str, Any] | None] = {}
    for ref, key_field in refs:
        secret_field = (
            "spec.model.apiKeySecret.name"
            if key_field.startswith("spec.model")
            else "spec.livekit.credentialsSecret"
        )
        if ref.name not in seen:
            try:
                seen[ref.name] = kube.get(path("v1", "Secret", spec.namespace, ref.name))
            except KubeError as e:
                if e.transient:
                    raise
                return Problem(
                    Reason.SECRET_UNREADABLE,
                    f"cannot read Secret {ref.name!r} ({secret_field}): {e.status} {e.reason}",
                )
        secret = seen[ref.name]
        if secret is None:
            return Problem(
                Reason.SECRET_NOT_FOUND,
                f"Secret {ref.name!r} ({secret_field}) does not exist in namespace "
                f"{spec.namespace!r}",
            )
        keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        if ref.key not in keys:
            return Problem(
                Reason.SECRET_KEY_MISSING,
                f"Secret {ref.name!r} has no key {ref.key!r} ({key_field}); "
                f"it has: {', '.join(sorted(keys)) or 'no keys'}",
            )
    return None


def check_autoscaler_api(kube: KubeApi, spec: VoiceAgentSpec) -> Problem | None:
    """Mode keda needs KEDA's API in the cluster; say so instead of half-applying."""
    if spec.autoscaling.mode == "keda" and kube.get(KEDA_GROUP_PATH) is None:
        return Problem(
            Reason.AUTOSCALER_UNAVAILABLE,
            "spec.autoscaling.mode is keda, but the cluster has no keda.sh/v1alpha1 API "
            "(install KEDA, or use mode builtin)",
        )
    return None


def _apply_autoscaler(
    kube: KubeApi, spec: VoiceAgentSpec, owner: Owner, settings: Settings
) -> None:
    """The HPA or ScaledObject the mode asks for; the other one, left from an earlier
    mode, is removed (the Deployment's replicas stay where they are)."""
    name = ChildNames.of(spec.name).deployment
    mode = spec.autoscaling.mode
    if mode == "hpa":
        kube.apply(render_hpa(spec, owner), FIELD_MANAGER)
    else:
        kube.delete(path(HPA_API, "HorizontalPodAutoscaler", spec.namespace, name))
    if mode == "keda":
        kube.apply(render_scaled_object(spec, owner, settings.prometheus_url), FIELD_MANAGER)
    elif kube.get(KEDA_GROUP_PATH) is not None:
        kube.delete(path(KEDA_API, "ScaledObject", spec.namespace, name))


def _problem_events(previous: Mapping[str, Any], problem: Problem | None) -> list[Event]:
    """Warn when a problem appears or changes, say so when it clears; never repeat."""
    before = ready_condition(previous)
    was_problem = before.get("reason") in _PROBLEM_REASONS
    if problem is not None:
        if before.get("reason") != problem.reason or before.get("message") != problem.message:
            return [Event("Warning", problem.reason, problem.message)]
        return []
    if was_problem:
        return [Event("Normal", "Resolved", f"{before.get('reason')} is resolved")]
    return []


def _degraded_events(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[Event]:
    """Warn when the workers start failing (crash loop, image pull, a stalled rollout) and
    say when they recover. Once per change of reason, not per pod or per reconcile; a
    blocking problem has its own Event (`_problem_events`)."""
    before = _condition(previous, "Degraded")
    after = _condition(status, "Degraded")
    was = before.get("status") == "True" and before.get("reason") not in _PROBLEM_REASONS
    now = after.get("status") == "True" and after.get("reason") not in _PROBLEM_REASONS
    if now and (not was or before.get("reason") != after.get("reason")):
        return [Event("Warning", str(after["reason"]), str(after.get("message", "")))]
    if was and not now and after.get("reason") == Reason.AS_EXPECTED:
        return [Event("Normal", "Recovered", f"{before.get('reason')} is over")]
    return []


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return {}


_PROBLEM_REASONS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.SECRET_NOT_FOUND,
        Reason.SECRET_KEY_MISSING,
        Reason.SECRET_UNREADABLE,
        Reason.APPLY_FAILED,
        Reason.AUTOSCALER_UNAVAILABLE,
    }
)


def _apply_children(
    kube: KubeApi,
    spec: VoiceAgentSpec,
    owner: Owner,
    settings: Settings,
    current: dict[str, Any] | None,
    previous: Mapping[str, Any],
    generation: int,
) -> tuple[dict[str, Any] | None, str, list[Event]]:
    """Apply every child; the events say what was created, re-created or repaired.

    Whether a child was created comes from the apply's own answer (HTTP 201), never from
    a read before it: a child deleted by hand between that read and the apply is created
    by the apply, and must be reported as re-created, not as drift on the old object.
    """
    children = render_children(spec, owner, settings)
    dep_path = path("apps/v1", "Deployment", spec.namespace, spec.name)
    created: list[str] = []
    for obj in children.in_apply_order()[:-1]:
        if kube.apply(obj, FIELD_MANAGER).created:
            created.append(f"{obj['kind']} {obj['metadata']['name']}")
    events: list[Event] = []
    deployment: dict[str, Any] | None
    if current is not None and current["metadata"].get("deletionTimestamp"):
        # Going away (a foreground deletion waits for its pods): an apply would only edit
        # a dying object. Its DELETED event brings the reconcile that re-creates it.
        deployment = current
    else:
        deployment, dep_created = _apply_deployment(
            kube, spec, children.deployment, current, dep_path
        )
        if dep_created:
            created.append(f"Deployment {spec.name}")
        elif current is not None and current.get("metadata", {}).get("generation") != (
            deployment.get("metadata", {}).get("generation")
        ):
            events.append(
                _deployment_change_event(spec, children.config_hash, previous, generation)
            )
    if created:
        # configHash is written only after children were applied: this VoiceAgent had
        # them before, so whatever was created now had been deleted outside the operator.
        verb = "Recreated" if previous.get("configHash") else "Created"
        why = " (deleted outside the operator)" if verb == "Recreated" else ""
        events.insert(0, Event("Normal", verb, f"{verb} {', '.join(created)}{why}"))
    return deployment, children.config_hash, events


def _apply_deployment(
    kube: KubeApi,
    spec: VoiceAgentSpec,
    body: dict[str, Any],
    current: dict[str, Any] | None,
    dep_path: str,
) -> tuple[dict[str, Any], bool]:
    """Apply the Deployment and its replicas (by the replicas field manager); returns it
    and whether this call created it."""
    if current is not None:
        replicas = desired_replicas(spec, int(current.get("spec", {}).get("replicas") or 0))
        if replicas is not None:
            # Before the main apply, which omits replicas: the replicas manager must own
            # them first, or the main manager letting go would reset them to 1.
            try:
                kube.apply(render_replicas_patch(spec, replicas), REPLICAS_FIELD_MANAGER)
            except KubeError as e:
                # A replicas-only apply cannot create a Deployment: if it was deleted
                # after our read, create it below; any other refusal is real.
                if e.transient or kube.get(dep_path) is not None:
                    raise
                current = None
    if current is None:
        # Creating: the main apply carries the initial replicas (else the Deployment
        # would start at 1); the replicas manager then co-owns them, so the next main
        # apply, which omits them, drops only its own claim, not the value.
        replicas = desired_replicas(spec, None)
        if replicas is not None:
            body = {**body, "spec": {**body["spec"], "replicas": replicas}}
    applied = kube.apply(body, FIELD_MANAGER)
    deployment = applied.obj
    if applied.created:
        # Also when it was deleted between the read and this apply: seed its replicas.
        replicas = desired_replicas(spec, None)
        if replicas is not None:
            deployment = kube.apply(
                render_replicas_patch(spec, replicas), REPLICAS_FIELD_MANAGER
            ).obj
    return deployment, applied.created


def _deployment_change_event(
    spec: VoiceAgentSpec, hash_: str, previous: Mapping[str, Any], generation: int
) -> Event:
    old_hash = previous.get("configHash")
    if old_hash and old_hash != hash_:
        return Event(
            "Normal",
            "ConfigChanged",
            f"agent.json changed ({old_hash} -> {hash_}); rolling workers",
        )
    if previous.get("observedGeneration") == generation:
        return Event(
            "Normal",
            "DriftRepaired",
            f"Deployment {spec.name} was changed outside the operator; restored",
        )
    return Event("Normal", "Updated", f"Updated Deployment {spec.name}")


def reconcile(
    kube: KubeApi,
    settings: Settings,
    namespace: str,
    name: str,
    *,
    active_sessions: int | None = None,
) -> Outcome:
    """Converge one VoiceAgent. Raises `KubeError` only for transient API errors."""
    body = kube.get(va_path(namespace, name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        return Outcome()  # children go with it (owner references)
    meta = body["metadata"]
    generation = int(meta.get("generation", 0))
    previous: dict[str, Any] = body.get("status") or {}
    raw_spec = body.get("spec") or {}
    names = ChildNames.of(name)
    current = kube.get(path("apps/v1", "Deployment", namespace, names.deployment))

    problem: Problem | None = None
    spec: VoiceAgentSpec | None = None
    hash_: str | None = None
    events: list[Event] = []
    deployment = current
    desired: int | None = None
    try:
        spec = parse_spec(name, namespace, raw_spec)
    except SpecError as e:
        problem = Problem(Reason.INVALID_SPEC, str(e))
    if spec is not None:
        problem = check_secrets(kube, spec) or check_autoscaler_api(kube, spec)
    if spec is not None and problem is None:
        try:
            owner = Owner.from_body(body)
            deployment, hash_, events = _apply_children(
                kube, spec, owner, settings, current, previous, generation
            )
            _apply_autoscaler(kube, spec, owner, settings)
        except SpecError as e:
            problem = Problem(Reason.INVALID_SPEC, str(e))
        except KubeError as e:
            if e.transient:
                raise
            # Rejected by the API server (a bad affinity, quota, admission): the spec is
            # wrong in a way only the server could tell. Report; retry on the next change.
            problem = Problem(Reason.APPLY_FAILED, f"{e.status} {e.reason}: {e.message}")
        replicas = (deployment or {}).get("spec", {}).get("replicas")
        desired = replicas if isinstance(replicas, int) else None

    pods: list[dict[str, Any]] = []
    dstatus = (deployment or {}).get("status", {})
    if deployment is not None and (dstatus.get("readyReplicas") or 0) < (
        deployment.get("spec", {}).get("replicas") or 0
    ):
        # Only a fleet short of ready workers needs the pods' reasons.
        pods = kube.list(path("v1", "Pod", namespace), selector_string(name))

    agent_name = spec.agent_name if spec else str(raw_spec.get("agentName") or name)
    per_worker = (
        spec.max_per_worker
        if spec
        else int((raw_spec.get("sessions") or {}).get("maxPerWorker") or 10)
    )
    status = compute_status(
        Observation(
            name=name,
            generation=generation,
            agent_name=agent_name,
            max_per_worker=per_worker,
            deployment=deployment,
            desired_replicas=desired,
            problem=problem,
            config_hash=hash_,
            pods=pods,
            active_sessions=active_sessions,
            previous=previous,
        )
    )
    events = _problem_events(previous, problem) + _degraded_events(previous, status) + events
    if status_changed(previous, status):
        kube.patch_status(va_path(namespace, name), status)
    return Outcome(body=body, status=status, problem=problem, events=events)
