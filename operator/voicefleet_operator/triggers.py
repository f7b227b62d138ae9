"""What each trigger of a VoiceAgent costs: a full reconcile, a status refresh, or nothing.

Pure decisions for handlers.py, on what the last full reconcile left behind (`Marks`):

- A child's watch event: the Deployment and disruption controllers write their objects'
  status many times per rollout; the operator's own applies change them too; an
  autoscaler changes a Deployment's replicas. None of that is drift. An event whose
  object still carries what the last full reconcile applied (same uid; same
  `metadata.generation` for a Deployment or PDB, whose spec changes bump it, or for a
  Deployment the same spec but for replicas; same `resourceVersion` for a ConfigMap or
  Service, which nothing else writes; the labels and annotations the operator applies)
  needs no apply: a Deployment's only needs the VoiceAgent's status refreshed (and its
  replicas checked against the mode's bounds), a PDB's nothing. Anything else (an edit by hand, a
  deletion, an unknown object) gets a full reconcile, which repairs it.
- A worker pod's watch event (the watch the autoscaler already holds): a status refresh
  only when what the status says about the pod changes (`pod_signal`: the scheduler
  cannot place it, a container is stuck), so an unschedulable or crash-looping worker
  shows in seconds, not at the next timer tick; every other pod event costs nothing.
- The timer: a full reconcile when the last one had a problem (retry: a Secret may have
  appeared) or failed, or when the last full reconcile is older than the resync period;
  a status refresh while the fleet is not settled (not Ready, rolling, degraded: the
  pods' reasons change without a Deployment event); else nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .status import FAILING_WAIT_REASONS, unschedulable

# resync: a full reconcile that also deletes autoscaler objects nothing expects (the
# periodic backstop, see reconcile.stale_autoscalers); full: a full reconcile; status: a
# status refresh; none: nothing.
Action = Literal["resync", "full", "status", "none"]

# Kinds whose spec changes bump metadata.generation (and whose status is written by a
# controller, which does not): compared by generation. Others by resourceVersion.
GENERATION_KINDS = frozenset({"Deployment", "PodDisruptionBudget", "NetworkPolicy"})


@dataclass(frozen=True)
class Mark:
    """One child as the last full reconcile applied it."""

    uid: str
    generation: int | None
    resource_version: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    spec_digest: str = ""  # a Deployment's: its spec but replicas, as the server keeps it

    @classmethod
    def of(cls, desired: Mapping[str, Any], applied: Mapping[str, Any]) -> Mark:
        """`desired`: the apply body (what the operator owns); `applied`: the answer."""
        meta = applied.get("metadata") or {}
        want = desired.get("metadata") or {}
        gen = meta.get("generation")
        return cls(
            uid=str(meta.get("uid", "")),
            generation=gen if isinstance(gen, int) else None,
            resource_version=str(meta.get("resourceVersion", "")),
            labels=dict(want.get("labels") or {}),
            annotations=dict(want.get("annotations") or {}),
            spec_digest=spec_digest(applied) if applied.get("kind") == "Deployment" else "",
        )


def spec_digest(obj: Mapping[str, Any]) -> str:
    """A Deployment's spec without replicas, hashed: an autoscaler's scale bumps the
    generation too, and is no edit of what the operator applied."""
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if k != "replicas"}
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Marks:
    """What a full reconcile without a problem left: per child kind, and the VoiceAgent's
    generation and config hash it applied."""

    generation: int
    config_hash: str
    children: Mapping[str, Mark]


def unchanged_since_apply(kind: str, body: Mapping[str, Any], mark: Mark | None) -> bool:
    """True when `body` still is the object the last full reconcile applied, apart from
    its status, fields the operator does not own and a Deployment's replicas (whose
    owner depends on the autoscaling mode: `reconcile.refresh_status` checks them)."""
    if mark is None:
        return False
    meta = body.get("metadata") or {}
    if meta.get("uid") != mark.uid or meta.get("deletionTimestamp"):
        return False
    if kind in GENERATION_KINDS:
        if meta.get("generation") != mark.generation and (
            not mark.spec_digest or spec_digest(body) != mark.spec_digest
        ):
            return False
    elif meta.get("resourceVersion") != mark.resource_version:
        return False
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return all(labels.get(k) == v for k, v in mark.labels.items()) and all(
        annotations.get(k) == v for k, v in mark.annotations.items()
    )


def child_action(
    kind: str, event_type: str, body: Mapping[str, Any], marks: Marks | None
) -> Action:
    """A child's MODIFIED or DELETED event."""
    if marks is None or event_type == "DELETED":
        return "full"
    if not unchanged_since_apply(kind, body, marks.children.get(kind)):
        return "full"
    return "status" if kind == "Deployment" else "none"


def timer_action(
    now: float,
    last_full: float | None,
    period: float,
    *,
    failed: bool,
    problem: bool,
    settled: bool,
    marks: Marks | None,
) -> Action:
    """The periodic timer's tick. `last_full`: when the last full reconcile finished (None:
    never in this process); `period`: the (jittered) resync period."""
    if last_full is not None and now - last_full >= period:
        return "resync"
    if last_full is None or failed or problem or marks is None:
        return "full"
    return "none" if settled else "status"


def settled(status: Mapping[str, Any] | None) -> bool:
    """Ready, not progressing, not degraded: nothing will change without an event."""
    conds = {c.get("type"): c.get("status") for c in (status or {}).get("conditions") or []}
    return (
        conds.get("Ready") == "True"
        and conds.get("Progressing") == "False"
        and conds.get("Degraded") == "False"
    )


def pod_signal(pod: Mapping[str, Any]) -> str | None:
    """What the VoiceAgent's status says about this worker pod, reduced to what changes
    it (reasons, not messages): None when nothing."""
    status = pod.get("status") or {}
    found = ["Unschedulable"] if unschedulable(pod) is not None else []
    for cs in status.get("containerStatuses") or []:
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        if reason in FAILING_WAIT_REASONS:
            found.append(f"{cs.get('name', '?')}:{reason}")
    return ",".join(sorted(found)) or None


def pod_action(event_type: str | None, before: str | None, after: str | None) -> Action:
    """A worker pod's event, given its signal as last seen and now: a status refresh when
    the signal changed. The initial listing (`event_type` None) asks nothing: the resume
    of every VoiceAgent reconciles in full anyway."""
    if not event_type or before == after:
        return "none"
    return "status"
