"""triggers.py: which trigger needs a full reconcile, a status refresh, or nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from voicefleet_operator import triggers
from voicefleet_operator.triggers import Mark, Marks, child_action, settled, timer_action

LABELS = {"app.kubernetes.io/managed-by": "voicefleet-operator"}


def obj(generation: int = 3, rv: str = "10", uid: str = "u1", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": uid,
            "generation": generation,
            "resourceVersion": rv,
            "labels": {**LABELS, "extra": "kept"},
            "annotations": {"voicefleet.dev/autoscaling-mode": "builtin", "x": "y"},
            **meta,
        }
    }


MARK = Mark(
    uid="u1",
    generation=3,
    resource_version="10",
    labels=LABELS,
    annotations={"voicefleet.dev/autoscaling-mode": "builtin"},
)
MARKS = Marks(
    generation=1,
    config_hash="h",
    children={
        "Deployment": MARK,
        "PodDisruptionBudget": MARK,
        "ConfigMap": MARK,
        "Service": MARK,
    },
)


def test_mark_of_keeps_what_the_operator_owns() -> None:
    desired = {"metadata": {"labels": LABELS, "annotations": {"a": "b"}}}
    m = Mark.of(desired, obj())
    assert (m.uid, m.generation, m.resource_version) == ("u1", 3, "10")
    assert m.labels == LABELS and m.annotations == {"a": "b"}


@pytest.mark.parametrize(
    ("kind", "event", "body", "action"),
    [
        # A controller wrote the status: generation and what we own unchanged.
        ("Deployment", "MODIFIED", obj(rv="11"), "status"),
        ("PodDisruptionBudget", "MODIFIED", obj(rv="11"), "none"),
        # Our own last apply's event (the same resourceVersion).
        ("ConfigMap", "MODIFIED", obj(), "none"),
        ("Service", "MODIFIED", obj(), "none"),
        # Edited by hand.
        ("Deployment", "MODIFIED", obj(generation=4), "full"),
        ("PodDisruptionBudget", "MODIFIED", obj(generation=4), "full"),
        ("ConfigMap", "MODIFIED", obj(rv="11"), "full"),
        ("Service", "MODIFIED", obj(rv="11"), "full"),
        ("Deployment", "MODIFIED", obj(labels={"extra": "kept"}), "full"),
        ("Deployment", "MODIFIED", obj(annotations={}), "full"),
        # Another object, going away, gone.
        ("Deployment", "MODIFIED", obj(uid="u2"), "full"),
        ("Deployment", "MODIFIED", obj(deletionTimestamp="2026-01-01T00:00:00Z"), "full"),
        ("Deployment", "DELETED", obj(), "full"),
    ],
)
def test_child_action(kind: str, event: str, body: dict[str, Any], action: str) -> None:
    assert child_action(kind, event, body, MARKS) == action


def test_child_action_without_marks_is_full() -> None:
    # No full reconcile yet in this process, or the last one had a problem.
    assert child_action("Deployment", "MODIFIED", obj(), None) == "full"
    no_pdb = Marks(1, "h", {"Deployment": MARK})
    assert child_action("PodDisruptionBudget", "MODIFIED", obj(), no_pdb) == "full"


def t(**kw: Any) -> str:
    args: dict[str, Any] = {
        "now": 1000.0,
        "last_full": 900.0,
        "period": 600.0,
        "failed": False,
        "problem": False,
        "settled": True,
        "marks": MARKS,
    }
    args.update(kw)
    now, last_full, period = args.pop("now"), args.pop("last_full"), args.pop("period")
    return timer_action(now, last_full, period, **args)


def test_timer_action() -> None:
    assert t() == "none"  # settled, resynced 100 s ago
    assert t(settled=False) == "status"  # rolling, not ready: its status, not an apply
    assert t(problem=True, marks=None) == "full"  # a Secret may have appeared
    assert t(failed=True) == "full"
    assert t(last_full=None, marks=None) == "full"  # never reconciled in this process
    assert t(now=1500.0) == "resync"  # the period is over
    assert t(now=1500.0, problem=True) == "resync"


def test_settled() -> None:
    conds = [
        {"type": "Ready", "status": "True"},
        {"type": "Progressing", "status": "False"},
        {"type": "Degraded", "status": "False"},
    ]
    assert settled({"conditions": conds})
    rolling = copy.deepcopy(conds)
    rolling[1]["status"] = "True"
    assert not settled({"conditions": rolling})
    assert not settled({}) and not settled(None)


def test_a_deployments_replicas_alone_are_no_edit() -> None:
    """An autoscaler's scale bumps the generation; only the replicas differ from what
    was applied. Any other spec change is an edit."""
    applied = {
        "kind": "Deployment",
        **obj(),
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": "a"}]}}},
    }
    marks = Marks(1, "h", {"Deployment": Mark.of({"metadata": {"labels": LABELS}}, applied)})
    scaled = copy.deepcopy(applied)
    scaled["spec"]["replicas"] = 4
    scaled["metadata"]["generation"] = 4
    assert child_action("Deployment", "MODIFIED", scaled, marks) == "status"
    edited = copy.deepcopy(scaled)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil"
    assert child_action("Deployment", "MODIFIED", edited, marks) == "full"


def _pod(scheduled: str | None = None, **waiting: str) -> dict[str, Any]:
    conds = [
        {"type": "PodScheduled", "status": "False", "reason": scheduled, "message": "0/1 nodes"}
    ]
    return {
        "metadata": {"name": "w-1"},
        "status": {
            "conditions": conds if scheduled else [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {"name": c, "state": {"waiting": {"reason": r}}} for c, r in waiting.items()
            ],
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    ("pod", "signal"),
    [
        (_pod(), None),
        (_pod(agent="ContainerCreating"), None),  # starting, not stuck
        (_pod("Unschedulable"), "Unschedulable"),
        (_pod("SchedulingGated"), None),
        (_pod(agent="CrashLoopBackOff"), "agent:CrashLoopBackOff"),
        (_pod("Unschedulable", agent="ImagePullBackOff"), "Unschedulable,agent:ImagePullBackOff"),
        ({"metadata": {"name": "bare"}}, None),
    ],
)
def test_pod_signal(pod: dict[str, Any], signal: str | None) -> None:
    assert triggers.pod_signal(pod) == signal


@pytest.mark.parametrize(
    ("event", "before", "after", "action"),
    [
        ("MODIFIED", None, "Unschedulable", "status"),  # became unschedulable
        ("MODIFIED", "Unschedulable", None, "status"),  # placed: the condition clears
        ("MODIFIED", "Unschedulable", "Unschedulable", "none"),  # a new message only
        ("MODIFIED", None, None, "none"),  # most pod events: probes, IPs, restarts
        ("ADDED", None, "Unschedulable", "status"),
        ("DELETED", "agent:CrashLoopBackOff", None, "status"),
        ("DELETED", None, None, "none"),
        (None, None, "Unschedulable", "none"),  # the initial listing: resume reconciles
    ],
)
def test_pod_action(event: str | None, before: str | None, after: str | None, action: str) -> None:
    assert triggers.pod_action(event, before, after) == action
