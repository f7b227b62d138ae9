"""One reconcile of one VoiceAgent: fetch, render, apply, write status.

Synchronous and free of kopf, so it runs in a worker thread and tests drive it with a fake
`KubeApi`. Order matters for "nothing running is changed": the spec is parsed and the
Secrets are checked *before* anything is applied; any problem becomes a condition (and an
Event, once) while the existing children stay as they are.

Replicas are owned per autoscaling mode (see `render.desired_replicas`) by a separate
field manager (`REPLICAS_FIELD_MANAGER`), so the main apply never carries
`spec.replicas` once the Deployment exists and an HPA, KEDA or `kubectl scale` on the
Deployment is never fought by the main manager.

API calls, a new VoiceAgent (its first step, see `reconcile_steps`): GET Deployment (404;
the VoiceAgent is kopf's copy), apply ConfigMap, apply Deployment; then: apply Service
and PDB (and the HPA or ScaledObject in those modes), PATCH status; with initial replicas
other than 1, also their apply by the replicas manager and the Deployment's again
without them (the main manager lets go of them). The Secrets' key names and KEDA's discovery come from `Lookups`, answers shared
by all reconciles for a few seconds; an HPA or ScaledObject of another mode is deleted
only when it may exist (`stale_autoscalers`). A reconcile with nothing to change: GET
VoiceAgent and Deployment, four applies. `refresh_status` is the status alone, for a
child's status changes: GET VoiceAgent, the pods if some are not ready, PATCH status
if it changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from voicefleet_contract import LABEL_MANAGED_BY, MANAGED_BY

from .fleet import ChildNames, selector_string, va_path
from .kube import KubeApi, KubeError, path
from .lookups import Lookups, SecretInfo
from .names import Claim, conflict_problem, normalise_url
from .render import (
    ANNOTATION_AUTOSCALING_MODE,
    ANNOTATION_SECRETS_HASH,
    NETWORK_POLICY_API,
    WORKER_KEYS,
    Owner,
    desired_replicas,
    render_children,
    render_replicas_patch,
    render_worker_keys,
)
from .render_autoscaler import (
    HPA_API,
    KEDA_API,
    render_hpa,
    render_scaled_object,
)
from .settings import (
    FIELD_MANAGER,
    REPLICAS_FIELD_MANAGER,
    WORKER_KEYS_FIELD_MANAGER,
    Settings,
)
from .spec import SecretKeyRef, SpecError, VoiceAgentSpec, parse_spec
from .status import Observation, Problem, Reason, compute_status, ready_condition, status_changed
from .triggers import Mark, Marks, unchanged_since_apply

log = logging.getLogger(__name__)
DEFAULT_REPLICAS = 1  # what the API server sets when a Deployment is created without any
# Whether a VoiceAgent must yield its agent name (names.AgentNames.rival_from_thread):
# (the VoiceAgent it must yield to or None, whether its own workers run under the claim).
NameCheck = Callable[[Claim], tuple[Claim | None, bool]]


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class SecretsApplied:
    """The Secret keys the applied pod template uses, and the hash of their values."""

    uid: str
    refs: tuple[SecretKeyRef, ...]
    hash: str


@dataclass
class Outcome:
    body: dict[str, Any] | None = None  # the VoiceAgent (None: it is gone)
    status: dict[str, Any] | None = None
    problem: Problem | None = None
    events: list[Event] = field(default_factory=list)
    # What a full reconcile without a problem applied (handlers.py tells drift from the
    # controllers' own writes by it); None after a status refresh or a problem.
    marks: Marks | None = None
    secrets: SecretsApplied | None = None  # what a full reconcile applied (rotation check)

    @property
    def ready(self) -> bool:
        return bool(self.status) and ready_condition(self.status or {}).get("status") == "True"


def secret_refs(spec: VoiceAgentSpec) -> list[tuple[SecretKeyRef, str, str]]:
    """Every Secret key the workers get, with the fields that name its Secret and key."""
    lk = "spec.livekit"
    refs = [
        (spec.livekit.api_key_ref, f"{lk}.credentialsSecret", f"{lk}.apiKeyKey"),
        (spec.livekit.api_secret_ref, f"{lk}.credentialsSecret", f"{lk}.apiSecretKey"),
    ]
    if spec.apiKeySecret is not None:
        m = "spec.model.apiKeySecret"
        refs.append((spec.apiKeySecret, f"{m}.name", f"{m}.key"))
    for h in spec.tool_headers:
        p = f"{h.path}.valueFrom.secretKeyRef"
        refs.append((h.ref, f"{p}.name", f"{p}.key"))
    return refs


def check_secrets(
    kube: KubeApi,
    spec: VoiceAgentSpec,
    lookups: Lookups,
    *,
    fresh: bool = False,
    digests: dict[SecretKeyRef, str] | None = None,
) -> Problem | None:
    """Each referenced Secret exists and has the key; values are never looked at, only
    their digests (`Lookups`), which go into `digests` when given (`secrets_hash`).
    `fresh`: not from `lookups`' recent answers (see `needs_fresh_secrets`)."""
    seen: dict[str, SecretInfo | None] = {}
    for ref, secret_field, key_field in secret_refs(spec):
        if ref.name not in seen:
            try:
                seen[ref.name] = lookups.secret_info(kube, spec.namespace, ref.name, fresh=fresh)
            except KubeError as e:
                if e.transient:
                    raise
                return Problem(
                    Reason.SECRET_UNREADABLE,
                    f"cannot read Secret {ref.name!r} ({secret_field}): {e.status} {e.reason}",
                )
        info = seen[ref.name]
        if info is None:
            return Problem(
                Reason.SECRET_NOT_FOUND,
                f"Secret {ref.name!r} ({secret_field}) does not exist in namespace "
                f"{spec.namespace!r}",
            )
        if ref.key not in info.keys:
            return Problem(
                Reason.SECRET_KEY_MISSING,
                f"Secret {ref.name!r} has no key {ref.key!r} ({key_field}); "
                f"it has: {', '.join(sorted(info.keys)) or 'no keys'}",
            )
        if digests is not None:
            digests[ref] = info.digests.get(ref.key, "")
    return None


def secrets_hash(uid: str, digests: Mapping[SecretKeyRef, str]) -> str:
    """What the workers' Secret values are, as a pod-template annotation: a rotation
    changes it and so rolls the workers. Only the keys they use count. A keyed digest
    (the VoiceAgent's uid) of the values' SHA-256s, cut to 64 bits: nothing in it helps
    to guess a value, and equal values in two VoiceAgents do not look equal. Pure."""
    text = json.dumps(sorted([r.name, r.key, d] for r, d in digests.items()))
    return hmac.new(uid.encode(), text.encode(), hashlib.sha256).hexdigest()[:16]


def secrets_rotated(
    kube: KubeApi, lookups: Lookups, namespace: str, applied: SecretsApplied
) -> bool:
    """Whether a Secret value the workers use changed since `applied` (the timer's cheap
    check: the shared answers of `lookups`, one read per Secret every few seconds
    however many VoiceAgents use it). A Secret gone or unreadable: not a rotation, the
    full reconcile that follows anyway tells."""
    digests: dict[SecretKeyRef, str] = {}
    for ref in applied.refs:
        try:
            info = lookups.secret_info(kube, namespace, ref.name)
        except KubeError:
            return False
        if info is None:
            return False
        digests[ref] = info.digests.get(ref.key, "")
    return secrets_hash(applied.uid, digests) != applied.hash


def ensure_worker_keys(kube: KubeApi, spec: VoiceAgentSpec, owner: Owner, lookups: Lookups) -> bool:
    """The VoiceAgent's worker-keys Secret has every key (`WORKER_KEYS`); missing ones
    are added with fresh values, existing ones never touched (running workers hold
    them). True when the Secret was created. Asked when pods may start from it (a new or
    changed fleet, the periodic resync), not on every reconcile."""
    name = ChildNames.of(spec.name).keys
    # Always read afresh: a shared answer a moment old may predate our own creation, and
    # new values over live ones would lock the running workers out.
    keys = lookups.secret_keys(kube, spec.namespace, name, fresh=True)
    if keys is not None and set(WORKER_KEYS) <= keys:
        return False
    missing = set(WORKER_KEYS) - (keys or frozenset())
    kube.apply(
        render_worker_keys(spec, owner if keys is None else None, missing),
        WORKER_KEYS_FIELD_MANAGER,
    )
    return keys is None


def needs_fresh_secrets(previous: Mapping[str, Any], generation: int) -> bool:
    """Whether this reconcile must read the Secrets now rather than trust an answer a few
    seconds old: when it may change a running fleet, i.e. the fleet exists (a config
    hash was written) and its spec is not applied yet (a new generation, or the last
    reconcile was blocked). A Secret deleted just before such an edit must block it.
    A first creation (nothing runs yet) and a re-apply of what runs (a no-op) may use
    the shared answer."""
    if not previous.get("configHash"):
        return False
    if previous.get("observedGeneration") != generation:
        return True
    return ready_condition(previous).get("reason") in _PROBLEM_REASONS


def check_agent_name(
    spec: VoiceAgentSpec,
    meta: Mapping[str, Any],
    current: Mapping[str, Any] | None,
    names: NameCheck,
) -> Problem | None:
    """Another VoiceAgent holds this one's agent name on its LiveKit server (names.py):
    nothing new is rendered, what runs stays as it is."""
    me = Claim(
        spec.namespace,
        spec.name,
        normalise_url(spec.livekit.url, spec.namespace),
        spec.agent_name,
        str(meta.get("creationTimestamp") or ""),
    )
    holder, holds = names(me)
    if holder is None:
        return None
    return conflict_problem(replace(me, holds=holds), holder, running=current is not None and holds)


def check_autoscaler_api(kube: KubeApi, spec: VoiceAgentSpec, lookups: Lookups) -> Problem | None:
    """Mode keda needs KEDA's API in the cluster; say so instead of half-applying."""
    if spec.autoscaling.mode == "keda" and not lookups.keda_served(kube):
        return Problem(
            Reason.AUTOSCALER_UNAVAILABLE,
            "spec.autoscaling.mode is keda, but the cluster has no keda.sh/v1alpha1 API "
            "(install KEDA, or use mode builtin)",
        )
    return None


AUTOSCALER_MODES = ("hpa", "keda")  # the modes with an object of their own


def stale_autoscalers(
    mode: str,
    current: Mapping[str, Any] | None,
    previous: Mapping[str, Any],
    *,
    thorough: bool = False,
) -> tuple[str, ...]:
    """The modes (hpa, keda) whose HPA or ScaledObject must be deleted before the
    Deployment is applied in `mode`. Pure.

    Only an object that may exist: the Deployment records the mode it was last applied
    in (`ANNOTATION_AUTOSCALING_MODE`), and a mode's object is applied only after the
    Deployment carries that mode and deleted before it carries another one, so the
    annotation names the only autoscaler object there can be. No Deployment and no
    config hash in the status: never applied, nothing to delete. A Deployment without the
    annotation (an older operator's), or none although a config hash was written
    (deleted by hand): anything may be left, delete both. `thorough` (the periodic
    resync): delete both regardless, the backstop for objects made outside this
    bookkeeping."""
    others = tuple(m for m in AUTOSCALER_MODES if m != mode)
    if thorough:
        return others
    if current is None:
        return others if previous.get("configHash") else ()
    annotations = current.get("metadata", {}).get("annotations") or {}
    recorded = annotations.get(ANNOTATION_AUTOSCALING_MODE)
    if recorded is None:
        return others
    return tuple(m for m in others if m == recorded)


def _delete_autoscalers(
    kube: KubeApi, spec: VoiceAgentSpec, lookups: Lookups, modes: tuple[str, ...]
) -> None:
    name = ChildNames.of(spec.name).deployment
    if "hpa" in modes:
        kube.delete(path(HPA_API, "HorizontalPodAutoscaler", spec.namespace, name))
    if "keda" in modes and lookups.keda_served(kube):
        kube.delete(path(KEDA_API, "ScaledObject", spec.namespace, name))


def _delete_network_policy(kube: KubeApi, spec: VoiceAgentSpec) -> None:
    """The operator runs without --worker-ingress now: the NetworkPolicy it rendered
    before goes (at the periodic resync; one read per VoiceAgent then). One of the same
    name that the operator did not render is left alone."""
    np_path = path(NETWORK_POLICY_API, "NetworkPolicy", spec.namespace,
                   ChildNames.of(spec.name).network_policy)  # fmt: skip
    try:
        got = kube.get(np_path)
    except KubeError as e:
        if e.status == 403:
            return  # RBAC without NetworkPolicies: then the operator never rendered one
        raise
    labels = (got or {}).get("metadata", {}).get("labels") or {}
    if got is not None and labels.get(LABEL_MANAGED_BY) == MANAGED_BY:
        kube.delete(np_path)


def _apply_autoscaler(
    kube: KubeApi, spec: VoiceAgentSpec, owner: Owner, settings: Settings
) -> None:
    """The HPA or ScaledObject the mode asks for (the other one, left from an earlier mode,
    was deleted before the Deployment was applied)."""
    mode = spec.autoscaling.mode
    if mode == "hpa":
        kube.apply(render_hpa(spec, owner), FIELD_MANAGER)
    elif mode == "keda":
        kube.apply(render_scaled_object(spec, owner, settings.prometheus_url), FIELD_MANAGER)


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
        Reason.AGENT_NAME_CONFLICT,
    }
)


@dataclass
class _Applied:
    deployment: dict[str, Any] | None
    config_hash: str
    events: list[Event]
    marks: dict[str, Mark]


def _apply_children(
    kube: KubeApi,
    spec: VoiceAgentSpec,
    owner: Owner,
    settings: Settings,
    lookups: Lookups,
    current: dict[str, Any] | None,
    previous: Mapping[str, Any],
    generation: int,
    thorough: bool,
    secrets: str | None = None,
) -> Generator[None, None, _Applied]:
    """Apply every child (`secrets`: `secrets_hash`, for the pod template); the events say what was created, re-created or repaired.

    Order: the ConfigMap (new pods mount it), the clean-up of another mode's autoscaler
    object, the Deployment; then (after a `yield`, see `reconcile_steps`) what the
    workers do not wait for: a new Deployment's replicas seed, Service, PDB (the caller
    applies this mode's HPA or ScaledObject last).

    Whether a child was created comes from the apply's own answer (HTTP 201), never from
    a read before it: a child deleted by hand between that read and the apply is created
    by the apply, and must be reported as re-created, not as drift on the old object.
    """
    children = render_children(spec, owner, settings, secrets)
    dep_path = path("apps/v1", "Deployment", spec.namespace, spec.name)
    created: list[str] = []
    marks: dict[str, Mark] = {}

    def apply(obj: dict[str, Any]) -> None:
        applied = kube.apply(obj, FIELD_MANAGER)
        marks[obj["kind"]] = Mark.of(obj, applied.obj)
        if applied.created:
            created.append(f"{obj['kind']} {obj['metadata']['name']}")

    # Before anything that starts pods: they read it at start (secretKeyRef).
    keys_due = current is None or thorough or previous.get("observedGeneration") != generation
    if keys_due and ensure_worker_keys(kube, spec, owner, lookups):
        created.append(f"Secret {ChildNames.of(spec.name).keys}")
    apply(children.configmap)
    stale = stale_autoscalers(spec.autoscaling.mode, current, previous, thorough=thorough)
    _delete_autoscalers(kube, spec, lookups, stale)
    events: list[Event] = []
    deployment: dict[str, Any] | None
    dep_created = carried = False
    if current is not None and current["metadata"].get("deletionTimestamp"):
        # Going away (a foreground deletion waits for its pods): an apply would only edit
        # a dying object. Its DELETED event brings the reconcile that re-creates it.
        deployment = current
    else:
        body = children.deployment
        deployment, dep_created, carried = _apply_deployment(kube, spec, body, current, dep_path)
        if dep_created:
            created.append(f"Deployment {spec.name}")
        elif current is not None and current.get("metadata", {}).get("generation") != (
            deployment.get("metadata", {}).get("generation")
        ):
            events.append(
                _deployment_change_event(
                    spec, children.config_hash, previous, generation, current, secrets
                )
            )
    yield  # the workers can start: the rest may wait behind other VoiceAgents' Deployments
    seed = desired_replicas(spec, None)
    if dep_created and seed is not None and (carried or desired_replicas(spec, seed) is not None):
        # Also when it was deleted between the read and the apply. The replicas manager
        # takes the initial replicas over, then the main manager lets go of them (its
        # apply omits them; else the first later apply would, a write of managedFields
        # alone, e.g. an operator restart's resume). At the default (1) nobody claims
        # them, two applies fewer, unless the reconciler itself will (mode none): then
        # the replicas manager claims them now, for the same reason.
        deployment = kube.apply(render_replicas_patch(spec, seed), REPLICAS_FIELD_MANAGER).obj
        if carried:
            deployment = kube.apply(children.deployment, FIELD_MANAGER).obj
    if deployment is not current:
        marks["Deployment"] = Mark.of(children.deployment, deployment)
    apply(children.service)
    apply(children.pdb)
    if children.network_policy is not None:
        apply(children.network_policy)
    elif thorough:
        _delete_network_policy(kube, spec)
    if created:
        # configHash is written only after children were applied: this VoiceAgent had
        # them before, so whatever was created now had been deleted outside the operator.
        verb = "Recreated" if previous.get("configHash") else "Created"
        why = " (deleted outside the operator)" if verb == "Recreated" else ""
        events.insert(0, Event("Normal", verb, f"{verb} {', '.join(created)}{why}"))
    return _Applied(deployment, children.config_hash, events, marks)


def _apply_deployment(
    kube: KubeApi,
    spec: VoiceAgentSpec,
    body: dict[str, Any],
    current: dict[str, Any] | None,
    dep_path: str,
) -> tuple[dict[str, Any], bool, bool]:
    """Apply the Deployment (and, on an existing one, its replicas by the replicas field
    manager first); returns it, whether this call created it, and whether the main apply
    carried replicas. A created one's replicas seed is the caller's (`_apply_children`),
    after the yield."""
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
        # Creating: the main apply carries initial replicas other than the API server's
        # default (else the Deployment would start at 1); the replicas manager then
        # takes them over (after the yield, `_apply_children`).
        replicas = desired_replicas(spec, None)
        if replicas is not None and replicas != DEFAULT_REPLICAS:
            body = {**body, "spec": {**body["spec"], "replicas": replicas}}
    applied = kube.apply(body, FIELD_MANAGER)
    return applied.obj, applied.created, "replicas" in body["spec"]


def _deployment_change_event(
    spec: VoiceAgentSpec,
    hash_: str,
    previous: Mapping[str, Any],
    generation: int,
    current: Mapping[str, Any],
    secrets: str | None,
) -> Event:
    old_hash = previous.get("configHash")
    if old_hash and old_hash != hash_:
        return Event(
            "Normal",
            "ConfigChanged",
            f"agent.json changed ({old_hash} -> {hash_}); rolling workers",
        )
    template = current.get("spec", {}).get("template", {}).get("metadata", {})
    old_secrets = (template.get("annotations") or {}).get(ANNOTATION_SECRETS_HASH)
    if secrets and old_secrets and old_secrets != secrets:
        return Event(
            "Normal",
            "SecretsChanged",
            "a Secret value the workers use changed (LiveKit or OpenAI key, tool header); "
            "rolling workers",
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
    lookups: Lookups | None = None,
    thorough: bool = False,
    body: dict[str, Any] | None = None,
    active_sessions: int | None = None,
    agent_names: NameCheck | None = None,
) -> Outcome:
    """Converge one VoiceAgent. Raises `KubeError` only for transient API errors.

    `lookups`: Secret and KEDA answers shared with other reconciles (None: ask the API
    server each time); `thorough`: also delete autoscaler objects no bookkeeping expects
    (`stale_autoscalers`); `body`: the VoiceAgent as just read (None: GET it); `agent_names`:
    whether another VoiceAgent holds its agent name on its LiveKit server (None: not
    checked)."""
    steps = reconcile_steps(
        kube,
        settings,
        namespace,
        name,
        lookups=lookups,
        thorough=thorough,
        body=body,
        active_sessions=active_sessions,
        agent_names=agent_names,
    )
    while True:
        try:
            next(steps)
        except StopIteration as done:
            outcome: Outcome = done.value
            return outcome


def reconcile_steps(
    kube: KubeApi,
    settings: Settings,
    namespace: str,
    name: str,
    *,
    lookups: Lookups | None = None,
    thorough: bool = False,
    body: dict[str, Any] | None = None,
    active_sessions: int | None = None,
    agent_names: NameCheck | None = None,
) -> Generator[None, None, Outcome]:
    """`reconcile` in two steps: it yields once the Deployment is applied (a new fleet's
    workers can start), so a caller with many VoiceAgents to create can apply every
    Deployment before the rest of each (reconciler.Reconciler). Its return value is the
    Outcome. The steps may run in different threads, one after the other."""
    lookups = lookups or Lookups.uncached()
    if body is None:
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
    applied: _Applied | None = None
    deployment = current
    desired: int | None = None
    try:
        spec = parse_spec(name, namespace, raw_spec)
    except SpecError as e:
        problem = Problem(Reason.INVALID_SPEC, str(e))
    if spec is not None and agent_names is not None:
        problem = check_agent_name(spec, meta, current, agent_names)
    digests: dict[SecretKeyRef, str] = {}
    if spec is not None and problem is None:
        fresh = needs_fresh_secrets(previous, generation)
        problem = check_secrets(
            kube, spec, lookups, fresh=fresh, digests=digests
        ) or check_autoscaler_api(kube, spec, lookups)
    uid = str(meta.get("uid") or "")
    secrets = secrets_hash(uid, digests) if spec is not None and problem is None else None
    if spec is not None and problem is None:
        try:
            owner = Owner.from_body(body)
            applied = yield from _apply_children(
                kube,
                spec,
                owner,
                settings,
                lookups,
                current,
                previous,
                generation,
                thorough,
                secrets,
            )
            deployment = applied.deployment
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

    outcome = _observe(
        kube,
        body,
        raw_spec,
        spec,
        deployment,
        desired,
        problem,
        applied.config_hash if applied else None,
        active_sessions,
    )
    if applied is not None:
        outcome.events += applied.events
        if problem is None:
            outcome.marks = Marks(generation, applied.config_hash, applied.marks)
            outcome.secrets = SecretsApplied(uid, tuple(digests), secrets or "")
    return outcome


def refresh_status(
    kube: KubeApi,
    namespace: str,
    name: str,
    marks: Marks,
    deployment: dict[str, Any] | None = None,
) -> Outcome | None:
    """The status only, for a fleet whose children are as the last full reconcile left
    them (`marks`) and whose Deployment's controller moved on (a rollout's progress, pods
    turning Ready or failing). No apply, no Secret read: a read of the VoiceAgent (and the
    Deployment, unless the watch's copy is given), the pods if some are not ready, the
    status write if it changed. None when this is not enough: the spec changed since,
    or the Deployment is not what was applied; the caller then reconciles in full."""
    body = kube.get(va_path(namespace, name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        return Outcome()
    if int(body["metadata"].get("generation", 0)) != marks.generation:
        return None
    raw_spec = body.get("spec") or {}
    try:
        spec = parse_spec(name, namespace, raw_spec)
    except SpecError:
        return None
    if deployment is None:
        deployment = kube.get(path("apps/v1", "Deployment", namespace, spec.name))
    if deployment is None or not unchanged_since_apply(
        "Deployment", deployment, marks.children.get("Deployment")
    ):
        return None
    replicas = deployment.get("spec", {}).get("replicas")
    desired = replicas if isinstance(replicas, int) else None
    wanted = desired_replicas(spec, desired or 0)
    if wanted is not None and wanted != desired:
        return None  # scaled out of the mode's bounds (or by hand in mode none): restore
    return _observe(kube, body, raw_spec, spec, deployment, desired, None, marks.config_hash, None)


def _observe(
    kube: KubeApi,
    body: dict[str, Any],
    raw_spec: Mapping[str, Any],
    spec: VoiceAgentSpec | None,
    deployment: dict[str, Any] | None,
    desired: int | None,
    problem: Problem | None,
    hash_: str | None,
    active_sessions: int | None,
) -> Outcome:
    """Status from what was seen, its Events, and the status write when it changed."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous: dict[str, Any] = body.get("status") or {}
    pods: list[dict[str, Any]] = []
    dstatus = (deployment or {}).get("status", {})
    have, ready = dstatus.get("replicas") or 0, dstatus.get("readyReplicas") or 0
    if (
        deployment is not None
        and have > 0
        and (ready < (deployment.get("spec", {}).get("replicas") or 0) or have > ready)
    ):
        # Only a fleet short of ready workers, or with a pod not ready yet (a rollout's
        # surge pod the scheduler cannot place), needs the pods' reasons, and only once
        # it has pods (a Deployment just created has none yet).
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
            generation=int(meta.get("generation", 0)),
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
    events = _problem_events(previous, problem) + _degraded_events(previous, status)
    if status_changed(previous, status):
        kube.patch_status(va_path(namespace, name), status)
    return Outcome(body=body, status=status, problem=problem, events=events)
