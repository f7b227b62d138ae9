"""Failover decisions: which sessions are orphaned, and what to do about each. Pure.

Open-source LiveKit drops a job when its worker dies; the operator re-dispatches it. Three
sources notice a loss, whichever is first wins (and the rest are ignored by the room's case):

- the worker view: the operator follows every worker's `/sessions` (one long poll each,
  every answer recorded as it comes). A room that a worker was serving, on a worker that
  now refuses connections, restarted, or whose pod is gone, is orphaned within a second
  or two;
- LiveKit's `participant_left` webhook for an agent, with a disconnect reason that is not a
  deliberate leave. After a SIGKILL LiveKit reports this only after ~20 s
  (`CONNECTION_TIMEOUT`, see docs/livekit-facts.md);
- the sweep: a room with callers in it, no agent of ours, and no recent dispatch.

A call LiveKit could not place at all (every worker full: livekit-server drops the job
with "no servers available" and never retries it) is found the same way, sooner: a caller
joining is watched until its agent comes, and a dispatch with no job after
`place_seconds`, in a room no worker serves, while no worker has a free slot, is
`unplaced`. Such a call waits for capacity (the autoscaler counts it as demand) and is
dispatched again as soon as a worker has a slot; waiting never uses up its attempts.

Re-dispatching twice would put two agents on one call, so before each dispatch the room's
own state is consulted: an agent of ours that joined after the loss, or a dispatch of ours
created after it, means the case is handled. That check reads LiveKit, not the operator's
memory, so it holds across operator restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from voicefleet_contract.one_agent import AGENT_NAME_ATTRIBUTE

from .fleet import Reading, WorkerPod

# LiveKit ParticipantInfo.Kind and DisconnectReason values (livekit.protocol.models).
KIND_STANDARD: Final = 0
KIND_SIP: Final = 3
KIND_AGENT: Final = 4
CALLER_KINDS: Final = frozenset({KIND_STANDARD, KIND_SIP})
# livekit.protocol.agent.JobStatus: a job its worker reported as finished without error
# ended on purpose (the agent hung up); FAILED or still RUNNING after the worker is gone
# means it was lost.
JOB_PENDING: Final = 0
JOB_RUNNING: Final = 1
JOB_SUCCESS: Final = 2
JOB_FAILED: Final = 3
# Reasons that mean someone meant the agent to go: no failover.
DELIBERATE_REASONS: Final = frozenset(
    {
        1,  # CLIENT_INITIATED: the agent disconnected itself (ended the call)
        4,  # PARTICIPANT_REMOVED: removed through the API
        5,  # ROOM_DELETED
        10,  # ROOM_CLOSED
    }
)

Source = Literal["worker", "pod", "hung", "webhook", "sweep", "unplaced"]
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
    id: str = ""
    job_status: int | None = None  # the status of its latest job; None: no job yet


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

    def dispatches_of(self, agent_name: str) -> list[Dispatch]:
        """Dispatches of `agent_name`, oldest first."""
        return sorted(
            (d for d in self.dispatches if d.agent_name == agent_name), key=lambda d: d.created_at
        )

    def ended_on_purpose(self, agent_name: str) -> bool:
        """The latest job of `agent_name` here was reported finished without error."""
        mine = self.dispatches_of(agent_name)
        return bool(mine) and mine[-1].job_status == JOB_SUCCESS

    def metadata_of(self, agent_name: str) -> str:
        """The metadata of the latest dispatch of `agent_name` (what to dispatch again)."""
        mine = self.dispatches_of(agent_name)
        return mine[-1].metadata if mine else ""


@dataclass(frozen=True)
class Loss:
    """Evidence that the agent serving `room` is gone."""

    room: str
    agent_name: str
    at: float  # unix seconds when noticed
    source: Source
    lost_identity: str = ""  # the dead agent's participant identity, when known
    metadata: str = ""  # the job's dispatch metadata, to dispatch again unchanged
    # When the lost agent joined, when known. Dispatches and agents newer than this belong
    # to the recovery: a webhook arrives ~20 s after a crash, so `at` may be later than a
    # dispatch another source already made for the same loss.
    lost_joined_at: float = 0.0

    @property
    def since(self) -> float:
        """Dispatches and agents at or after this time came after the loss."""
        return self.lost_joined_at + 0.001 if self.lost_joined_at else self.at - 1


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    backoff_seconds: float = 1.0  # doubles per attempt
    join_timeout_seconds: float = 10.0  # a dispatch whose agent has not joined by then failed
    sweep_grace_seconds: float = 5.0  # a room without an agent for this long is orphaned
    # Never more dispatches of one agent into one room than this, counted in LiveKit (so
    # the bound holds across operator restarts and repeated losses of one long call).
    max_dispatches_per_room: int = 10
    # A room that vanished from a live worker's /sessions is re-checked for this long.
    suspect_seconds: float = 30.0
    # ... and is lost if the agent is still in the room this long after: an agent that
    # ends its job leaves within a second, a crashed one lingers until LiveKit's ~20 s
    # timeout (and a worker restarted by the kubelet lists no rooms at all).
    vanish_grace_seconds: float = 3.0
    # A dispatch LiveKit placed has its job within a second or so (the worker accepted
    # the offer); one with no job this long after, while every worker is full, was not
    # placed (LiveKit does not retry it).
    place_seconds: float = 3.0


@dataclass(frozen=True)
class Case:
    """One orphaned session being recovered."""

    loss: Loss
    attempts: int = 0
    last_dispatch_at: float = 0.0
    outcome: Outcome | None = None
    # When the call began waiting for a free worker slot (0: it is not waiting).
    waiting_since: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.loss.room, self.loss.agent_name)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    case: Case
    reason: str
    # With "dispatch": the lost agent's participant, still in the room, to remove first
    # (a dead one lingers ~20 s in LiveKit, a hung one for as long as it hangs): a call
    # never has two agents, even for a moment.
    evict: str = ""


def step(case: Case, view: RoomView, now: float, policy: Policy, free: int | None = None) -> Action:
    """The next thing to do for `case`, given the room as LiveKit shows it now.

    Everything that prevents a second dispatch is read from `view` (LiveKit's state), not
    from the case: a new agent in the room, a dispatch made after the loss (by this operator
    before a restart, or by anyone), the number of dispatches already made.

    `free`: session slots the fleet's workers have now (None: unknown). With none, LiveKit
    would drop a dispatch (no worker under its target load): the call waits for capacity
    instead, as long as its caller stays, without using up attempts."""
    loss = case.loss
    if case.outcome is not None:
        return Action("done", case, f"already {case.outcome}")
    if not view.exists or not view.callers():
        return Action("done", replace(case, outcome="caller_gone"), "no caller left in the room")
    # An agent of ours that joined after the loss, other than the lost one: recovered.
    new = joined_after(view, case)
    if new is not None:
        outcome: Outcome = "redispatched" if case.attempts else "ended"
        return Action(
            "done", replace(case, outcome=outcome), f"agent {new.identity} is in the room"
        )
    if not view.dispatches_of(loss.agent_name):
        # Our agents only come by explicit dispatch: with none left in the room (deleted
        # after a deliberate end, or by the application) nobody wants an agent here.
        return Action("done", replace(case, outcome="ended"), "no dispatch of the agent left")
    after = [d for d in view.dispatches_of(loss.agent_name) if d.created_at >= loss.since]
    if view.ended_on_purpose(loss.agent_name):
        outcome = "redispatched" if after else "ended"
        return Action("done", replace(case, outcome=outcome), "the agent's job ended without error")
    full = free is not None and free <= 0
    # A dispatch created after the loss (ours before a restart, or anyone's) still in time,
    # unless LiveKit has plainly not placed it (no job, and no worker had a slot).
    if any(
        now - d.created_at < policy.join_timeout_seconds and not not_placed(d, now, policy, full)
        for d in after
    ):
        return Action("wait", case, "a dispatch after the loss is pending; waiting for its agent")
    # Attempts: dispatches made while a worker had a slot (this operator's count), or that
    # LiveKit placed (its count, which survives a restart). Waiting for capacity uses none.
    attempts = max(case.attempts, sum(1 for d in after if d.job_status is not None))
    if full:
        waiting = replace(case, waiting_since=case.waiting_since or now)
        return Action("wait", waiting, "no worker has a free slot; the call waits for one")
    if attempts >= policy.max_attempts:
        return Action(
            "done", replace(case, outcome="gave_up"), f"no agent after {attempts} dispatches"
        )
    if len(view.dispatches_of(loss.agent_name)) >= policy.max_dispatches_per_room:
        return Action(
            "done",
            replace(case, outcome="gave_up"),
            f"the room already had {policy.max_dispatches_per_room} dispatches of this agent",
        )
    last = max([case.last_dispatch_at, *(d.created_at for d in after)])
    if attempts and now < last + policy.backoff_seconds * 2 ** (attempts - 1):
        return Action("wait", case, "backing off before the next dispatch")
    lingering = any(a.identity == loss.lost_identity for a in view.agents(loss.agent_name))
    return Action(
        "dispatch",
        replace(case, attempts=attempts + 1, last_dispatch_at=now, waiting_since=0.0),
        f"orphaned (noticed by {loss.source}); dispatch {attempts + 1}/{policy.max_attempts}",
        loss.lost_identity if loss.lost_identity and lingering else "",
    )


def stale(d: Dispatch, now: float, policy: Policy) -> bool:
    """A dispatch with no job `place_seconds` after it was made: LiveKit has not placed it."""
    return d.job_status is None and now - d.created_at >= policy.place_seconds


def not_placed(d: Dispatch, now: float, policy: Policy, full: bool) -> bool:
    """LiveKit dropped this dispatch: no job after `place_seconds` while no worker had a
    slot (with a slot somewhere, a slow offer may still be on its way: not guessed at)."""
    return full and stale(d, now, policy)


# --- noticing losses ---------------------------------------------------------------------


def loss_from_webhook(
    event: str,
    room: str,
    participant_kind: int,
    participant_identity: str,
    attributes: Mapping[str, str],
    disconnect_reason: int,
    now: float,
    joined_at: float = 0.0,
) -> Loss | None:
    """A `participant_left` of one of our agents that did not leave on purpose."""
    if event != "participant_left" or participant_kind != KIND_AGENT:
        return None
    if disconnect_reason in DELIBERATE_REASONS:
        return None
    agent_name = attributes.get(AGENT_NAME_ATTRIBUTE, "")
    if not agent_name:
        return None
    return Loss(room, agent_name, now, "webhook", participant_identity, "", joined_at)


@dataclass(frozen=True)
class WorkerRoom:
    room: str
    agent_name: str
    participant: str
    metadata: str = ""
    started_at: float = 0.0  # when the job started (after its dispatch was made)


def restarted_workers(before: Mapping[str, int], now: Mapping[str, int]) -> list[str]:
    """Pods whose worker container's restartCount rose since `before` (a pod seen for the
    first time has nothing to compare with). Pure."""
    return sorted(pod for pod, n in now.items() if n > before.get(pod, n))


def losses_from_workers(
    previous: Mapping[str, Sequence[WorkerRoom]],
    refused: Iterable[str],
    gone: Iterable[str],
    now: float,
    hung: Iterable[str] = (),
) -> list[Loss]:
    """Rooms last served by workers that are gone (pod deleted), whose process died (its
    address refuses connections), or that hang (the kubelet's readiness probe fails AND a
    fresh read of /sessions gets no answer: two witnesses, one on the node). A worker the
    operator merely cannot reach while the kubelet still finds it ready is not lost: that
    is the network between them, and its calls go on."""
    sources: list[tuple[str, Source]] = [(k, "pod") for k in gone]
    sources += [(k, "worker") for k in refused]
    sources += [(k, "hung") for k in hung]
    return [
        Loss(r.room, r.agent_name, now, source, r.participant, r.metadata, r.started_at)
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
            if view.agents(name) or view.ended_on_purpose(name):
                continue
            if len(view.dispatches_of(name)) >= policy.max_dispatches_per_room:
                continue
            key = (view.room, name)
            since = empty_since.get(key, now)
            absent[key] = since
            pending = any(
                d.agent_name == name and now - d.created_at < policy.join_timeout_seconds
                for d in view.dispatches
            )
            if not pending and now - since >= policy.sweep_grace_seconds:
                losses.append(Loss(view.room, name, since, "sweep", "", view.metadata_of(name)))
    return losses, absent


def unplaced(
    view: RoomView,
    agent_name: str,
    now: float,
    free: int,
    served: Iterable[str],
    policy: Policy,
) -> Loss | None:
    """A call LiveKit could not place: callers, a dispatch of `agent_name` with no job for
    `place_seconds`, no agent of it in the room, no worker serving the room, and no free
    slot on any worker (so LiveKit had nowhere to put the job, and it never retries).

    With a free slot somewhere, a dispatch with no job yet may still be on its way to a
    worker: that is left to the sweep's longer `join_timeout_seconds`, never guessed at."""
    if free > 0 or not view.exists or not view.callers() or view.agents(agent_name):
        return None
    if view.room in set(served):
        return None
    mine = view.dispatches_of(agent_name)
    if not mine or mine[-1].job_status is not None:
        return None
    if now - mine[-1].created_at < policy.place_seconds:
        return None
    return Loss(view.room, agent_name, now, "unplaced", "", mine[-1].metadata)


def merge_loss(cases: Mapping[tuple[str, str], Case], loss: Loss) -> Case | None:
    """A new case for `loss`, or None when the room already has an open one (first wins)."""
    existing = cases.get((loss.room, loss.agent_name))
    if existing is not None and existing.outcome is None:
        return None
    return Case(loss)


def dispatch_metadata(case: Case, view: RoomView) -> str:
    """The metadata to dispatch with: the lost job's, else the room's latest dispatch's."""
    return case.loss.metadata or view.metadata_of(case.loss.agent_name)


def vanished_rooms(
    previous: Mapping[str, Sequence[WorkerRoom]], current: Mapping[str, Sequence[WorkerRoom]]
) -> list[WorkerRoom]:
    """Rooms a worker that still answers no longer serves. Usually the call ended; when a
    job process crashed, the room still has callers and no agent: `confirm_vanished`."""
    out = []
    for key, rooms in current.items():
        now_serving = {r.room for r in rooms}
        out += [r for r in previous.get(key, ()) if r.room not in now_serving]
    return out


@dataclass(frozen=True)
class WorkerView:
    """What failover knows of one fleet's workers between two readings: the rooms each
    worker pod served when last read, its worker container's restart count, and the hung
    pods already ended (not asked twice)."""

    serving: Mapping[str, tuple[WorkerRoom, ...]] = field(default_factory=dict)
    restarts: Mapping[str, int] = field(default_factory=dict)
    ended_pods: frozenset[str] = frozenset()

    def rooms(self) -> set[str]:
        return {w.room for rooms in self.serving.values() for w in rooms}

    def ended(self, pod: str) -> WorkerView:
        return replace(self, ended_pods=self.ended_pods | {pod})


@dataclass(frozen=True)
class WorkersSeen:
    """What one look at the workers found: the view after it, calls lost with their
    worker, hung workers to end, rooms a live worker no longer serves (to confirm with
    LiveKit: `judge_vanished`), and the rooms served now."""

    view: WorkerView
    losses: tuple[Loss, ...] = ()
    hung: tuple[str, ...] = ()
    vanished: tuple[WorkerRoom, ...] = ()
    served: frozenset[str] = frozenset()


def watch_workers(
    view: WorkerView,
    pods: Sequence[WorkerPod],
    readings: Mapping[str, Reading],
    agent_name: str,
    now: float,
) -> WorkersSeen:
    """The worker view's reducer: `view` and the fleet's pods with their latest
    `/sessions` readings in, the next view and what happened out. Pure.

    A pod without an IP (its container restarting) has no process serving anything; one
    whose worker container restarted has a new process that serves none of the old one's
    calls (it may answer before the feed ever saw a refusal). A worker not read yet keeps
    what it served before. A refused read is a dead process; a pod the kubelet finds not
    ready that does not answer a fresh read either (two witnesses, one on the node) is
    hung; a pod gone from the list was deleted."""
    restarts = {p.name: p.restarts for p in pods}
    restarted = restarted_workers(view.restarts, restarts)
    refused = [p.name for p in pods if not p.ip] + restarted
    hung: list[str] = []
    current: dict[str, tuple[WorkerRoom, ...]] = {}
    for p in pods:
        r = readings.get(p.name)
        if p.name in restarted or not p.ip or r is None:
            continue
        if r.report is not None:
            current[p.name] = tuple(
                WorkerRoom(x.room, agent_name, x.participant, "", x.startedAt)
                for x in r.report.rooms
            )
        elif r.error == "refused":
            refused.append(p.name)
        elif not p.ready and not p.deleting and r.error in ("timeout", "unreachable"):
            hung.append(p.name)
    present = {p.name for p in pods}
    gone = [k for k in view.serving if k not in present]
    ended_pods = view.ended_pods & present
    serving = {k: v for k, v in view.serving.items() if k in present}
    serving.update({k: () for k in [*refused, *hung]})
    serving.update(current)
    return WorkersSeen(
        view=WorkerView(serving, restarts, ended_pods),
        losses=tuple(losses_from_workers(view.serving, refused, gone, now, hung)),
        hung=tuple(k for k in hung if k not in ended_pods),
        vanished=tuple(vanished_rooms(view.serving, current)),
        served=frozenset(w.room for rooms in current.values() for w in rooms),
    )


Verdict = Literal["lost", "ended", "wait", "moot"]


def judge_vanished(
    suspect: WorkerRoom,
    view: RoomView,
    noticed_at: float,
    now: float,
    policy: Policy = Policy(),
) -> tuple[Verdict, Loss | None]:
    """What it means that a worker that still answers no longer lists `suspect`'s room.

    - `moot`: no caller left, or another agent of ours serves the room;
    - `ended`: the agent left the room within `vanish_grace_seconds` of the room vanishing
      (an agent ending its call disconnects at once; LiveKit keeps the job RUNNING in
      ListDispatch either way, so the job status cannot tell);
    - `lost`: the agent is still in the room after the grace (a dead job's participant
      lingers until LiveKit's ~20 s timeout), or LiveKit has the job as FAILED;
    - `wait`: look again next tick."""
    if not view.exists or not view.callers():
        return "moot", None
    name = suspect.agent_name
    if any(a.identity != suspect.participant for a in view.agents(name)):
        return "moot", None
    mine = view.dispatches_of(name)
    if not mine:
        return "moot", None  # its dispatch is gone: nobody wants an agent here
    failed = mine[-1].job_status == JOB_FAILED
    lingering = any(a.identity == suspect.participant for a in view.agents(name))
    within = now - noticed_at < policy.vanish_grace_seconds
    if not failed and mine[-1].job_status == JOB_SUCCESS:
        return "ended", None
    if not failed and within:
        return ("wait", None) if lingering else ("ended", None)
    loss = Loss(
        suspect.room,
        name,
        noticed_at,
        "worker",
        suspect.participant,
        suspect.metadata or view.metadata_of(name),
        suspect.started_at,
    )
    return "lost", loss


def deliberate_leave(
    event: str, participant_kind: int, attributes: Mapping[str, str], disconnect_reason: int
) -> str | None:
    """The agent name of an agent that left its room on purpose (a `participant_left`
    webhook with a deliberate reason), else None."""
    if event != "participant_left" or participant_kind != KIND_AGENT:
        return None
    if disconnect_reason not in DELIBERATE_REASONS:
        return None
    return attributes.get(AGENT_NAME_ATTRIBUTE) or None


def joined_after(view: RoomView, case: Case) -> Participant | None:
    """The new agent of the case's name that joined the room after the loss, if any."""
    loss = case.loss
    for a in view.agents(loss.agent_name):
        if a.identity != loss.lost_identity and a.joined_at >= loss.since:
            return a
    return None
