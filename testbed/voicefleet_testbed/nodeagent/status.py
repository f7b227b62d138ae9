"""Pure: from the node agent's view of a pod's containers to the pod's `status` object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass
class ContainerView:
    """What the node agent knows of one container, in the API's terms."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    last_state: JSON = field(default_factory=dict)
    container_id: str = ""

    def to_status(self) -> JSON:
        state: JSON
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {
                "terminated": {
                    "exitCode": self.exit_code if self.exit_code is not None else 0,
                    "reason": self.reason or ("Completed" if not self.exit_code else "Error"),
                    "startedAt": self.started_at,
                    "finishedAt": self.finished_at,
                    **({"message": self.message} if self.message else {}),
                    **({"containerID": self.container_id} if self.container_id else {}),
                }
            }
        else:
            state = {
                "waiting": {
                    "reason": self.reason,
                    **({"message": self.message} if self.message else {}),
                }
            }
        out: JSON = {
            "name": self.name,
            "image": self.image,
            "imageID": f"testbed://{self.image}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def _condition(
    kind: str, ok: bool, since: dict[str, tuple[bool, str]], now: str, reason: str = ""
) -> JSON:
    # lastTransitionTime changes only when the status flips, as the kubelet does.
    prev = since.get(kind)
    if prev is None or prev[0] != ok:
        since[kind] = (ok, now)
    cond: JSON = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastTransitionTime": since[kind][1],
    }
    if not ok and reason:
        cond["reason"] = reason
    return cond


def pod_phase(restart_policy: str, init: list[ContainerView], main: list[ContainerView]) -> str:
    """The pod phase from its containers, as the kubelet derives it."""
    if any(c.state == "terminated" and c.exit_code for c in init) and restart_policy == "Never":
        return "Failed"
    if not all(c.state == "terminated" and c.exit_code == 0 for c in init):
        return "Pending"
    never_ran = all(
        c.state == "waiting" and c.restart_count == 0 and not c.last_state for c in main
    )
    if not main or never_ran:
        return "Pending"
    if all(c.state == "terminated" for c in main):
        succeeded = all(c.exit_code == 0 for c in main)
        if restart_policy == "Never" or (restart_policy == "OnFailure" and succeeded):
            return "Succeeded" if succeeded else "Failed"
    return "Running"


def pod_status(
    *,
    restart_policy: str,
    init: list[ContainerView],
    main: list[ContainerView],
    pod_ip: str,
    start_time: str,
    now: str,
    since: dict[str, tuple[bool, str]],
) -> JSON:
    """The pod's status subresource content. `since` carries condition transition times
    between calls (the caller keeps it per pod)."""
    initialized = all(c.state == "terminated" and c.exit_code == 0 for c in init)
    containers_ready = bool(main) and all(c.ready for c in main)
    not_ready_reason = "ContainersNotReady" if initialized else "ContainersNotInitialized"
    phase = pod_phase(restart_policy, init, main)
    status: JSON = {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": [
            _condition("PodReadyToStartContainers", True, since, now),
            _condition("Initialized", initialized, since, now, "ContainersNotInitialized"),
            _condition(
                "Ready", containers_ready and phase == "Running", since, now, not_ready_reason
            ),
            _condition("ContainersReady", containers_ready, since, now, not_ready_reason),
            _condition("PodScheduled", True, since, now),
        ],
        "containerStatuses": [c.to_status() for c in main],
    }
    if init:
        status["initContainerStatuses"] = [c.to_status() for c in init]
    return status
