"""Failover decisions: which sessions are orphaned, and what to do about each. Pure.

Open-source LiveKit drops a job when its worker dies; the operator re-dispatches it. Three
sources notice a loss, whichever is first wins (and the rest are ignored by the room's case):

- the worker view: the operator reads every worker's `/sessions` each second. A room
  that a worker was serving, on a worker that now refuses connections or whose pod is
  gone, is orphaned within about a second;
- LiveKit's `participant_left` webhook for an agent, with a disconnect reason that is not a
  deliberate leave. After a SIGKILL LiveKit reports this only after ~20 s
  (`CONNECTION_TIMEOUT`, see docs/livekit-facts.md);
- the sweep: a room with callers in it, no agent of ours, and no recent dispatch.

Re-dispatching twice would put two agents on one call, so before each dispatch the room's
own state is consulted: an agent of ours that joined after the loss, or a dispatch of ours
created after it, means the case is handled. That check reads LiveKit, not the operator's
memory, so it holds across operator restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

AGENT_NAME_ATTRIBUTE: Final = "lk.agent.name"

# LiveKit ParticipantInfo.Kind and DisconnectReason values (livekit.protocol.models).
KIND_STANDARD: Final = 0
KIND_SIP: Final = 3
KIND_AGENT: Final = 4
CALLER_KINDS: Final = frozenset({KIND_STANDARD, KIND_SIP})
# Reasons that mean someone meant the agent to go: no failover.
DELIBERATE_REASONS: Final = frozenset(
    {
        1,  # CLIENT_INITIATED: the agent disconnected itself (ended the call)
        4,  # PARTICIPANT_REMOVED: removed through the API
        5,  # ROOM_DELETED
        10,  # ROOM_CLOSED
    }
)

Source = Literal["worker", "pod", "webhook", "sweep"]
Outcome = Literal["redispatched", "caller_gone", "gave_up", "ended"]
ActionKind = Literal["dispatch", "wait", "done"]


@dataclass(frozen=True)
class Participant:
    identity: str
    kind: int
    agent_name: str = ""  # from the lk.agent.name attribute, for agents
    joined_at: float = 0.0  # unix seconds

    @property
    def is_caller(self) -> bool:
        return self.kind in CALLER_KINDS


@dataclass(frozen=True)
class Dispatch:
    agent_name: str
    created_at: float  # unix seconds
    metadata: str = ""


@dataclass(frozen=True)
class RoomView:
    """What LiveKit says of a room now (ListParticipants + ListDispatch)."""

    room: str
    exists: bool
    participants: tuple[Participant, ...] = ()
    dispatches: tuple[Dispatch, ...] = ()

    def callers(self) -> list[Participant]:
        return [p for p in self.participants if p.is_caller]

    def agents(self, agent_name: str) -> list[Participant]:
        return [p for p in self.participants if p.kind == KIND_AGENT and p.agent_name == agent_name]


@dataclass(frozen=True)
class Loss:
    """Evidence that the agent serving `room` is gone."""

    room: str
    agent_name: str
    at: float  # unix seconds when noticed
    source: Source
    lost_identity: str = ""  # the dead agent's participant identity, when known
    metadata: str = ""  # the job's dispatch metadata, to dispatch again unchanged


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    backoff_seconds: float = 1.0  # doubles per attempt
    join_timeout_seconds: float = 10.0  # a dispatch whose agent has not joined by then failed
    sweep_grace_seconds: float = 5.0  # a room without an agent for this long is orphaned


@dataclass(frozen=True)
class Case:
    """One orphaned session being recovered."""

    loss: Loss
    attempts: int = 0
    last_dispatch_at: float = 0.0
    outcome: Outcome | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.loss.room, self.loss.agent_name)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    case: Case
    reason: str


def step(case: Case, view: RoomView, now: float, policy: Policy) -> Action:
    """The next thing to do for `case`, given the room as LiveKit shows it now."""
    loss = case.loss
    if case.outcome is not None:
        return Action("done", case, f"already {case.outcome}")
    if not view.exists or not view.callers():
        return Action("done", replace(case, outcome="caller_gone"), "no caller left in the room")
    # An agent of ours that joined after the loss, other than the lost one: recovered.
    new_agents = [
        a
        for a in view.agents(loss.agent_name)
        if a.identity != loss.lost_identity and a.joined_at >= loss.at - 1
    ]
    if new_agents:
        outcome: Outcome = "redispatched" if case.attempts else "ended"
        why = f"agent {new_agents[0].identity} is in the room"
        return Action("done", replace(case, outcome=outcome), why)
    # A dispatch created after the loss (ours before a restart, or anyone's) still in time.
    recent = [
        d
        for d in view.dispatches
        if d.agent_name == loss.agent_name
        and d.created_at >= loss.at - 1
        and now - d.created_at < policy.join_timeout_seconds
    ]
    if recent:
        return Action("wait", case, "a dispatch after the loss is pending; waiting for its agent")
    if case.attempts >= policy.max_attempts:
        return Action(
            "done", replace(case, outcome="gave_up"), f"no agent after {case.attempts} dispatches"
        )
    if case.attempts and now < case.last_dispatch_at + policy.backoff_seconds * 2 ** (
        case.attempts - 1
    ):
        return Action("wait", case, "backing off before the next dispatch")
    return Action(
        "dispatch",
        replace(case, attempts=case.attempts + 1, last_dispatch_at=now),
        f"orphaned (noticed by {loss.source}); dispatch {case.attempts + 1}/{policy.max_attempts}",
    )


# --- noticing losses ---------------------------------------------------------------------


def loss_from_webhook(
    event: str,
    room: str,
    participant_kind: int,
    participant_identity: str,
    attributes: Mapping[str, str],
    disconnect_reason: int,
    now: float,
) -> Loss | None:
    """A `participant_left` of one of our agents that did not leave on purpose."""
    if event != "participant_left" or participant_kind != KIND_AGENT:
        return None
    if disconnect_reason in DELIBERATE_REASONS:
        return None
    agent_name = attributes.get(AGENT_NAME_ATTRIBUTE, "")
    if not agent_name:
        return None
    return Loss(room, agent_name, now, "webhook", participant_identity)


@dataclass(frozen=True)
class WorkerRoom:
    room: str
    agent_name: str
    participant: str
    metadata: str = ""


def losses_from_workers(
    previous: Mapping[str, Sequence[WorkerRoom]],
    unreachable: Iterable[str],
    gone: Iterable[str],
    now: float,
) -> list[Loss]:
    """Rooms last served by workers that are now gone (pod deleted) or refuse connections
    (the process died). A worker that merely answers slowly is not declared dead here."""
    sources: list[tuple[str, Source]] = [(k, "pod") for k in gone]
    sources += [(k, "worker") for k in unreachable]
    return [
        Loss(r.room, r.agent_name, now, source, r.participant, r.metadata)
        for key, source in sources
        for r in previous.get(key, ())
    ]


def orphans_from_sweep(
    views: Iterable[RoomView],
    agent_names: Iterable[str],
    empty_since: Mapping[tuple[str, str], float],
    now: float,
    policy: Policy,
) -> tuple[list[Loss], dict[tuple[str, str], float]]:
    """Rooms where one of our agents was dispatched, callers remain, and no agent of ours
    has been present for `sweep_grace_seconds` (and no dispatch is pending).

    Returns the losses and the updated "agent absent since" map (carried between sweeps)."""
    names = set(agent_names)
    absent: dict[tuple[str, str], float] = {}
    losses = []
    for view in views:
        if not view.exists or not view.callers():
            continue
        for name in {d.agent_name for d in view.dispatches} & names:
            if view.agents(name):
                continue
            key = (view.room, name)
            since = empty_since.get(key, now)
            absent[key] = since
            pending = any(
                d.agent_name == name and now - d.created_at < policy.join_timeout_seconds
                for d in view.dispatches
            )
            if not pending and now - since >= policy.sweep_grace_seconds:
                meta = next((d.metadata for d in view.dispatches if d.agent_name == name), "")
                losses.append(Loss(view.room, name, since, "sweep", "", meta))
    return losses, absent


def merge_loss(cases: Mapping[tuple[str, str], Case], loss: Loss) -> Case | None:
    """A new case for `loss`, or None when the room already has an open one (first wins)."""
    existing = cases.get((loss.room, loss.agent_name))
    if existing is not None and existing.outcome is None:
        return None
    return Case(loss)
