"""status.py: conditions from the children's state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from voicefleet_operator.status import Observation, Problem, compute_status, status_changed

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)


def dep(
    desired: int = 3,
    replicas: int = 3,
    ready: int = 3,
    updated: int = 3,
    generation: int = 2,
    observed: int = 2,
    progressing_reason: str = "NewReplicaSetAvailable",
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "conditions": [{"type": "Progressing", "status": "True", "reason": progressing_reason}],
        },
    }


def obs(**kw: Any) -> Observation:
    base: dict[str, Any] = {
        "name": "support",
        "generation": 4,
        "agent_name": "support",
        "max_per_worker": 10,
        "deployment": dep(),
        "desired_replicas": 3,
        "config_hash": "abc",
        "now": T0,
    }
    base.update(kw)
    return Observation(**base)


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_all_ready() -> None:
    s = compute_status(obs())
    assert cond(s, "Ready")["status"] == "True"
    assert cond(s, "Ready")["reason"] == "WorkersReady"
    assert cond(s, "Progressing")["status"] == "False"
    assert cond(s, "Degraded")["status"] == "False"
    assert s["observedGeneration"] == 4
    assert s["capacity"] == 30 and s["workers"] == "3/3" and s["sessions"] == "0/30"
    assert (
        s["selector"]
        == "app.kubernetes.io/instance=support,app.kubernetes.io/name=voicefleet-worker"
    )
    assert all(c["observedGeneration"] == 4 for c in s["conditions"])


def test_rolling_update_stays_ready_while_progressing() -> None:
    s = compute_status(obs(deployment=dep(replicas=4, ready=3, updated=1)))
    assert cond(s, "Ready")["status"] == "True"
    p = cond(s, "Progressing")
    assert p["status"] == "True" and p["reason"] == "RollingOut" and "3 old" in p["message"]


def test_not_ready_names_failing_pods() -> None:
    pods = [
        {
            "metadata": {"name": "support-abc"},
            "status": {
                "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]
            },
        }
    ]
    s = compute_status(obs(deployment=dep(ready=1), pods=pods))
    assert cond(s, "Ready")["status"] == "False"
    assert "support-abc: ImagePullBackOff" in cond(s, "Ready")["message"]
    assert cond(s, "Degraded")["reason"] == "WorkersFailing"


def test_deadline_exceeded_is_degraded() -> None:
    s = compute_status(obs(deployment=dep(ready=0, progressing_reason="ProgressDeadlineExceeded")))
    assert cond(s, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert cond(s, "Degraded")["status"] == "True"


def test_problem_blocks_and_keeps_running_workers_in_status() -> None:
    p = Problem("SecretNotFound", "Secret 'openai' does not exist")
    s = compute_status(
        obs(problem=p, desired_replicas=None, config_hash=None, previous={"configHash": "old"})
    )
    assert cond(s, "Ready") | {"lastTransitionTime": ""} == {
        "type": "Ready",
        "status": "False",
        "reason": "SecretNotFound",
        "message": "Secret 'openai' does not exist",
        "lastTransitionTime": "",
        "observedGeneration": 4,
    }
    assert cond(s, "Degraded")["status"] == "True"
    assert "left as they are" in cond(s, "Degraded")["message"]
    assert s["replicas"] == 3 and s["configHash"] == "old"


def test_scaled_to_zero_is_ready() -> None:
    s = compute_status(
        obs(deployment=dep(desired=0, replicas=0, ready=0, updated=0), desired_replicas=0)
    )
    assert cond(s, "Ready")["reason"] == "ScaledToZero"


def test_no_deployment() -> None:
    s = compute_status(obs(deployment=None, desired_replicas=None))
    assert cond(s, "Ready")["reason"] == "DeploymentMissing"


def test_transition_time_moves_only_with_status() -> None:
    first = compute_status(obs())
    again = compute_status(obs(previous=first, now=T1))
    assert again == first and not status_changed(first, again)
    broken = compute_status(obs(previous=first, now=T1, deployment=dep(ready=1)))
    assert cond(broken, "Ready")["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    assert cond(broken, "Degraded")["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert status_changed(first, broken)


PSA_MESSAGE = (
    'pods "support-7d4b9-x2k" is forbidden: violates PodSecurity "restricted:latest": '
    "allowPrivilegeEscalation != false"
)
QUOTA_MESSAGE = 'pods "support-7d4b9-q8z" is forbidden: exceeded quota: q, requested: pods=1'
SCHED_MESSAGE = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."


def failed_create(d: dict[str, Any], message: str, status: str = "True") -> dict[str, Any]:
    """A Deployment carrying the ReplicaSet's ReplicaFailure, as its controller copies it."""
    d["status"]["conditions"].append(
        {"type": "ReplicaFailure", "status": status, "reason": "FailedCreate", "message": message}
    )
    return d


def pod(name: str, scheduled: str | None = None, waiting: str | None = None, deleting: bool = False) -> dict[str, Any]:  # fmt: skip
    p: dict[str, Any] = {"metadata": {"name": name}, "status": {"conditions": []}}
    if scheduled is not None:
        p["status"]["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": scheduled, "message": SCHED_MESSAGE}
        )  # fmt: skip
    if waiting is not None:
        p["status"]["containerStatuses"] = [{"state": {"waiting": {"reason": waiting}}}]
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return p


@pytest.mark.parametrize(
    ("deployment", "pods", "ready", "progressing", "degraded"),
    [
        # Pod Security or a quota: the ReplicaSet cannot create pods. Nothing moves until
        # a human acts, so not Progressing, with the API's reason and message.
        (failed_create(dep(replicas=0, ready=0, updated=0), PSA_MESSAGE), [],
         ("False", "WorkersNotReady", "FailedCreate: " + PSA_MESSAGE),
         ("False", "FailedCreate", PSA_MESSAGE), ("True", "FailedCreate", PSA_MESSAGE)),
        (failed_create(dep(replicas=2, ready=2, updated=2), QUOTA_MESSAGE), [],
         ("False", "WorkersNotReady", QUOTA_MESSAGE),
         ("False", "FailedCreate", QUOTA_MESSAGE), ("True", "FailedCreate", QUOTA_MESSAGE)),
        # A condition the controller has cleared (status False) is no failure.
        (failed_create(dep(), QUOTA_MESSAGE, status="False"), [],
         ("True", "WorkersReady", "3/3"), ("False", "RolloutComplete", ""), ("False", "AsExpected", "")),
        # Created but not placed: the scheduler's own reason and message.
        (dep(ready=1), [pod("support-b", "Unschedulable"), pod("support-a", "Unschedulable"), pod("support-c")],
         ("False", "WorkersNotReady", "Unschedulable: pod support-a (and 1 more): " + SCHED_MESSAGE),
         ("True", "RollingOut", ""), ("True", "Unschedulable", "pod support-a (and 1 more): " + SCHED_MESSAGE)),
        # A rollout's surge pod that fits nowhere: the fleet serves, the rollout is stuck.
        (dep(replicas=4, ready=3, updated=1), [pod("support-new", "Unschedulable")],
         ("True", "WorkersReady", ""), ("True", "RollingOut", ""),
         ("True", "Unschedulable", "pod support-new: " + SCHED_MESSAGE)),
        # A pod going away, or one only waiting for its scheduler turn, is no blocker.
        (dep(ready=2), [pod("support-x", "Unschedulable", deleting=True), pod("support-y", "SchedulerError")],
         ("False", "WorkersNotReady", "2/3"), ("True", "RollingOut", ""), ("False", "AsExpected", "")),
        # A blocker outranks failing containers in Degraded; Ready names both.
        (dep(ready=1), [pod("support-u", "Unschedulable"), pod("support-c", waiting="CrashLoopBackOff")],
         ("False", "WorkersNotReady", "support-c: CrashLoopBackOff"),
         ("True", "RollingOut", ""), ("True", "Unschedulable", "pod support-u: ")),
    ],
)  # fmt: skip
def test_why_workers_cannot_start(
    deployment: dict[str, Any],
    pods: list[dict[str, Any]],
    ready: tuple[str, str, str],
    progressing: tuple[str, str, str],
    degraded: tuple[str, str, str],
) -> None:
    s = compute_status(obs(deployment=deployment, pods=pods))
    for type_, (status, reason, message) in (
        ("Ready", ready),
        ("Progressing", progressing),
        ("Degraded", degraded),
    ):
        c = cond(s, type_)
        assert (c["status"], c["reason"]) == (status, reason), c
        assert message in c["message"], c
