"""Pure status computation: what the children look like -> the VoiceAgent's status.

Conditions follow Kubernetes conventions (metav1.Condition): `Ready` (enough workers
serve calls), `Progressing` (a rollout or scale is under way), `Degraded` (something
needs a human). A condition's `lastTransitionTime` changes only when its status does,
so an unchanged fleet yields an identical status and the operator writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from .fleet import selector_string

# Why a worker container is stuck; surfaced in Degraded.
FAILING_WAIT_REASONS: Final = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
MAX_MESSAGE: Final = 1024
# The Deployment controller copies a ReplicaSet's `ReplicaFailure` condition (reason
# `FailedCreate`: Pod Security admission, a ResourceQuota, a missing ServiceAccount...)
# onto the Deployment; the scheduler marks a pod it cannot place `PodScheduled=False`,
# reason `Unschedulable`. Both say within seconds what the 600 s progress deadline
# would only say much later, and why.
REPLICA_FAILURE: Final = "ReplicaFailure"
UNSCHEDULABLE: Final = "Unschedulable"


class Reason:
    INVALID_SPEC: Final = "InvalidSpec"
    SECRET_NOT_FOUND: Final = "SecretNotFound"
    SECRET_KEY_MISSING: Final = "SecretKeyMissing"
    SECRET_UNREADABLE: Final = "SecretUnreadable"
    APPLY_FAILED: Final = "ApplyFailed"
    AUTOSCALER_UNAVAILABLE: Final = "AutoscalerUnavailable"
    AGENT_NAME_CONFLICT: Final = "AgentNameConflict"
    DEPLOYMENT_MISSING: Final = "DeploymentMissing"
    WORKERS_READY: Final = "WorkersReady"
    WORKERS_NOT_READY: Final = "WorkersNotReady"
    SCALED_TO_ZERO: Final = "ScaledToZero"
    ROLLING_OUT: Final = "RollingOut"
    ROLLOUT_COMPLETE: Final = "RolloutComplete"
    DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
    WORKERS_FAILING: Final = "WorkersFailing"
    AS_EXPECTED: Final = "AsExpected"


@dataclass(frozen=True)
class Problem:
    """Why the operator could not (fully) reconcile; nothing running was changed."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    name: str
    generation: int
    agent_name: str
    max_per_worker: int
    deployment: Mapping[str, Any] | None
    desired_replicas: int | None = None  # None: whatever the Deployment says
    problem: Problem | None = None
    config_hash: str | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    active_sessions: int | None = None
    previous: Mapping[str, Any] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dep_condition(dep: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for c in dep.get("status", {}).get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return {}


def failing_pods(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """'pod: reason' for each pod whose worker container is stuck."""
    out = []
    for pod in pods:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        for cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FAILING_WAIT_REASONS:
                name = pod.get("metadata", {}).get("name", "?")
                out.append(f"{name}: {waiting['reason']}")
    return sorted(out)


@dataclass(frozen=True)
class Blocker:
    """Why workers cannot start, in the API's own words: its reason and message."""

    reason: str
    message: str
    creates: bool  # pods cannot even be created (the rollout cannot move at all)


def _pod_condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for c in pod.get("status", {}).get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return {}


def unschedulable(pod: Mapping[str, Any]) -> str | None:
    """The scheduler's message for a pod it cannot place, else None."""
    c = _pod_condition(pod, "PodScheduled")
    if c.get("status") == "False" and c.get("reason") == UNSCHEDULABLE:
        return str(c.get("message") or "no node fits the pod")
    return None


def blocker(dep: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Blocker | None:
    """What keeps workers from starting: the Deployment's `ReplicaFailure` condition, else
    pods the scheduler cannot place. Pure."""
    failure = _dep_condition(dep, REPLICA_FAILURE)
    if failure.get("status") == "True":
        return Blocker(
            str(failure.get("reason") or "FailedCreate"),
            str(failure.get("message") or "the ReplicaSet cannot create pods"),
            creates=True,
        )
    stuck = sorted(
        (str(p.get("metadata", {}).get("name", "?")), msg)
        for p in pods
        if not p.get("metadata", {}).get("deletionTimestamp")
        and (msg := unschedulable(p)) is not None
    )
    if stuck:
        name, msg = stuck[0]
        others = f" (and {len(stuck) - 1} more)" if len(stuck) > 1 else ""
        return Blocker(UNSCHEDULABLE, f"pod {name}{others}: {msg}", creates=False)
    return None


def _truncate(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def compute_status(o: Observation) -> dict[str, Any]:
    dep = o.deployment
    dstatus: Mapping[str, Any] = dep.get("status", {}) if dep else {}
    replicas = _int(dstatus.get("replicas"))
    ready = _int(dstatus.get("readyReplicas"))
    updated = _int(dstatus.get("updatedReplicas"))
    if o.desired_replicas is not None:
        desired = o.desired_replicas
    else:
        desired = _int(dep.get("spec", {}).get("replicas", 1)) if dep else 0
    active = (
        o.active_sessions
        if o.active_sessions is not None
        else _int(o.previous.get("activeSessions"))
    )
    capacity = ready * o.max_per_worker
    conditions = _conditions(o, dep, replicas, ready, updated, desired)
    telephony = telephony_condition(o.previous.get("telephony"))
    if telephony is not None:
        conditions.append(telephony)
    prev_conditions = {c.get("type"): c for c in o.previous.get("conditions") or []}
    return {
        "observedGeneration": o.generation,
        "agentName": o.agent_name,
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "desiredReplicas": desired,
        "activeSessions": active,
        "capacity": capacity,
        "selector": selector_string(o.name),
        "configHash": o.config_hash or o.previous.get("configHash") or "",
        "workers": f"{ready}/{desired}",
        "sessions": f"{active}/{capacity}",
        "conditions": [
            _condition(t, s, r, m, o.generation, prev_conditions.get(t), o.now)
            for t, s, r, m in conditions
        ],
    }


TELEPHONY_READY: Final = "TelephonyReady"


def telephony_condition(t: Mapping[str, Any] | None) -> tuple[str, str, str, str] | None:
    """TelephonyReady from status.telephony, which the telephony sync writes (it owns that
    field; this writer owns the conditions list, so the two never overwrite each other)."""
    if not t or t.get("state") in (None, "Removed"):
        return None
    state = str(t["state"])
    ok = state == "Synced"
    return (TELEPHONY_READY, "True" if ok else "False", state, str(t.get("message") or ""))


def _conditions(
    o: Observation,
    dep: Mapping[str, Any] | None,
    replicas: int,
    ready: int,
    updated: int,
    desired: int,
) -> list[tuple[str, str, str, str]]:
    if o.problem is not None:
        p = o.problem
        kept = f"; the {replicas} running workers are left as they are" if replicas else ""
        return [
            ("Ready", "False", p.reason, p.message),
            ("Progressing", "False", p.reason, f"reconcile blocked: {p.message}"),
            ("Degraded", "True", p.reason, p.message + kept),
        ]
    if dep is None:
        msg = "the worker Deployment does not exist yet"
        return [
            ("Ready", "False", Reason.DEPLOYMENT_MISSING, msg),
            ("Progressing", "True", Reason.DEPLOYMENT_MISSING, msg),
            ("Degraded", "False", Reason.AS_EXPECTED, ""),
        ]
    failing = failing_pods(o.pods)
    blocked = blocker(dep, o.pods)
    stalled = _dep_condition(dep, "Progressing").get("reason") == Reason.DEADLINE_EXCEEDED
    dgen = _int(dep.get("metadata", {}).get("generation"))
    seen = _int(dep.get("status", {}).get("observedGeneration")) >= dgen
    rolling = not seen or updated < desired or replicas > updated or ready < desired

    if desired == 0 and replicas == 0:
        ready_c = ("Ready", "True", Reason.SCALED_TO_ZERO, "scaled to zero workers")
    elif ready >= desired:
        ready_c = ("Ready", "True", Reason.WORKERS_READY, f"{ready}/{desired} workers ready")
    else:
        why = [f"{blocked.reason}: {blocked.message}"] if blocked else []
        detail = f"; {', '.join(why + failing)}" if why or failing else ""
        ready_c = (
            "Ready",
            "False",
            Reason.WORKERS_NOT_READY,
            f"{ready}/{desired} workers ready{detail}",
        )

    if blocked is not None and blocked.creates:
        # Nothing moves until someone fixes the cause: not progressing, say so now.
        progressing_c = ("Progressing", "False", blocked.reason, blocked.message)
    elif stalled:
        prog = _dep_condition(dep, "Progressing").get("message", "rollout stalled")
        progressing_c = ("Progressing", "False", Reason.DEADLINE_EXCEEDED, str(prog))
    elif rolling:
        old = replicas - updated
        msg = f"{updated}/{desired} workers updated, {ready} ready"
        if old > 0:
            msg += f", {old} old still running"
        progressing_c = ("Progressing", "True", Reason.ROLLING_OUT, msg)
    else:
        progressing_c = ("Progressing", "False", Reason.ROLLOUT_COMPLETE, "rollout complete")

    if blocked is not None:
        degraded_c = ("Degraded", "True", blocked.reason, blocked.message)
    elif failing:
        degraded_c = ("Degraded", "True", Reason.WORKERS_FAILING, ", ".join(failing))
    elif stalled:
        degraded_c = ("Degraded", "True", Reason.DEADLINE_EXCEEDED, progressing_c[3])
    else:
        degraded_c = ("Degraded", "False", Reason.AS_EXPECTED, "")
    return [ready_c, progressing_c, degraded_c]


def _condition(
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    if (
        previous is not None
        and previous.get("status") == status
        and previous.get("lastTransitionTime")
    ):
        since = previous["lastTransitionTime"]
    else:
        since = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": _truncate(message),
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def ready_condition(status: Mapping[str, Any]) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            return c  # type: ignore[no-any-return]
    return {}


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when writing `new` would change anything `old` says."""
    return any(old.get(k) != v for k, v in new.items())
