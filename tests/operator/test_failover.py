"""Failover decisions (no cluster, no LiveKit): orphan detection and the dispatch rules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from voicefleet_operator.failover import (
    JOB_FAILED,
    JOB_PENDING,
    JOB_RUNNING,
    JOB_SUCCESS,
    KIND_AGENT,
    KIND_SIP,
    KIND_STANDARD,
    Case,
    Dispatch,
    Loss,
    Participant,
    Policy,
    RoomView,
    WorkerRoom,
    deliberate_leave,
    dispatch_metadata,
    judge_vanished,
    loss_from_webhook,
    losses_from_workers,
    merge_loss,
    orphans_from_sweep,
    step,
    unplaced,
    vanished_rooms,
)

P = Policy(max_attempts=3, backoff_seconds=1, join_timeout_seconds=10, sweep_grace_seconds=5)
CALLER = Participant("caller", KIND_STANDARD, joined_at=0)
GHOST = Participant("agent-old", KIND_AGENT, "support", joined_at=1)
LOSS = Loss("r1", "support", at=100, source="worker", lost_identity="agent-old", metadata='{"x":1}')


def view(
    *participants: Participant, dispatches: tuple[Dispatch, ...] = (), exists: bool = True
) -> RoomView:
    return RoomView("r1", exists, participants, dispatches)


def test_orphan_is_dispatched_even_while_the_dead_agent_lingers() -> None:
    original = (Dispatch("support", created_at=0.5, metadata="m"),)
    a = step(Case(LOSS), view(CALLER, GHOST, dispatches=original), now=100.5, policy=P)
    assert a.kind == "dispatch"
    assert a.case.attempts == 1
    assert "noticed by worker" in a.reason


def test_no_dispatch_left_means_nobody_wants_an_agent() -> None:
    # Deleted after a deliberate end (or by the application): no dispatch, no failover.
    a = step(Case(LOSS), view(CALLER, GHOST), now=100.5, policy=P)
    assert (a.kind, a.case.outcome) == ("done", "ended")
    verdict, loss = judge_vanished(SUSPECT, view(CALLER, GHOST), 100, 110, P)
    assert (verdict, loss) == ("moot", None)


def test_pending_dispatch_is_not_repeated_and_survives_operator_restart() -> None:
    # A fresh Case (operator restarted, memory lost) sees the dispatch made before.
    pending = view(CALLER, GHOST, dispatches=(Dispatch("support", created_at=101),))
    assert step(Case(LOSS), pending, now=103, policy=P).kind == "wait"


def test_new_agent_in_room_closes_case_as_redispatched() -> None:
    case = Case(LOSS, attempts=1, last_dispatch_at=101)
    new = Participant("agent-new", KIND_AGENT, "support", joined_at=102)
    a = step(case, view(CALLER, GHOST, new), now=103, policy=P)
    assert (a.kind, a.case.outcome) == ("done", "redispatched")


def test_caller_gone_or_room_closed_means_no_dispatch() -> None:
    assert step(Case(LOSS), view(GHOST), now=101, policy=P).case.outcome == "caller_gone"
    assert step(Case(LOSS), view(exists=False), now=101, policy=P).case.outcome == "caller_gone"


def test_backoff_then_gives_up_after_max_attempts() -> None:
    case = Case(LOSS, attempts=1, last_dispatch_at=100)
    stale = view(CALLER, dispatches=(Dispatch("support", created_at=100),))
    # The first dispatch's agent never came: after the join timeout, dispatch again.
    assert step(case, stale, now=105, policy=P).kind == "wait"
    a = step(case, stale, now=111, policy=P)
    assert (a.kind, a.case.attempts) == ("dispatch", 2)
    a = step(Case(LOSS, attempts=3, last_dispatch_at=120), stale, now=140, policy=P)
    assert (a.kind, a.case.outcome) == ("done", "gave_up")


def test_webhook_tells_deliberate_leave_from_crash() -> None:
    attrs = {"lk.agent.name": "support"}
    crash = loss_from_webhook("participant_left", "r1", KIND_AGENT, "a1", attrs, 14, now=5)
    assert crash is not None
    assert (crash.source, crash.lost_identity) == ("webhook", "a1")
    assert loss_from_webhook("participant_left", "r1", KIND_AGENT, "a1", attrs, 1, now=5) is None
    assert loss_from_webhook("participant_left", "r1", KIND_STANDARD, "c", {}, 14, now=5) is None
    assert loss_from_webhook("participant_joined", "r1", KIND_AGENT, "a1", attrs, 0, now=5) is None


def test_worker_view_losses_only_for_dead_or_deleted_workers() -> None:
    previous = {
        "ns/w1": [WorkerRoom("r1", "support", "agent-1", "m")],
        "ns/w2": [WorkerRoom("r2", "support", "agent-2")],
        "ns/w3": [WorkerRoom("r3", "support", "agent-3")],
    }
    losses = losses_from_workers(previous, refused=["ns/w1"], gone=["ns/w2"], now=9)
    assert sorted((x.room, x.source) for x in losses) == [("r1", "worker"), ("r2", "pod")]
    assert next(x for x in losses if x.room == "r1").metadata == "m"
    hung = losses_from_workers(previous, refused=[], gone=[], now=9, hung=["ns/w3"])
    assert [(x.room, x.source, x.lost_identity) for x in hung] == [("r3", "hung", "agent-3")]


def test_the_lost_agent_still_in_the_room_is_removed_before_the_new_one_is_dispatched() -> None:
    original = (Dispatch("support", created_at=0.5, metadata="m"),)
    a = step(Case(LOSS), view(CALLER, GHOST, dispatches=original), now=100.5, policy=P)
    assert (a.kind, a.evict) == ("dispatch", "agent-old")
    gone = step(Case(LOSS), view(CALLER, dispatches=original), now=100.5, policy=P)
    assert (gone.kind, gone.evict) == ("dispatch", "")  # it left already: nothing to remove
    sweep = Case(Loss("r1", "support", at=100, source="sweep"))
    assert step(sweep, view(CALLER, dispatches=original), now=100.5, policy=P).evict == ""


def test_sweep_needs_grace_and_no_pending_dispatch() -> None:
    # A worker that died leaves its job RUNNING in LiveKit's dispatch.
    old = (Dispatch("support", created_at=0, metadata="m", job_status=JOB_RUNNING),)
    empty = RoomView("r1", True, (CALLER,), old)
    losses, absent = orphans_from_sweep([empty], ["support"], {}, now=50, policy=P)
    assert losses == []  # first seen empty now: wait for the grace period
    losses, absent = orphans_from_sweep([empty], ["support"], absent, now=56, policy=P)
    assert [(x.room, x.source, x.metadata) for x in losses] == [("r1", "sweep", "m")]
    served = RoomView("r1", True, (CALLER, GHOST), old)
    assert orphans_from_sweep([served], ["support"], absent, now=60, policy=P)[0] == []
    other = RoomView("r2", True, (CALLER,), (Dispatch("someone-else", 0),))
    assert orphans_from_sweep([other], ["support"], {}, now=60, policy=P)[0] == []


def test_first_notice_wins() -> None:
    cases = {("r1", "support"): Case(LOSS)}
    later = Loss("r1", "support", at=120, source="webhook")
    assert merge_loss(cases, later) is None
    closed = {("r1", "support"): Case(LOSS, outcome="redispatched")}
    assert merge_loss(closed, later) == Case(later)


def replace_status(d: Dispatch, status: int | None) -> Dispatch:
    return replace(d, job_status=status)


# --- no second dispatch for one loss, whoever noticed it and whenever -----------------------
FIRST = Dispatch("support", created_at=10, metadata="m", id="d1", job_status=JOB_RUNNING)
# The worker view noticed the crash at 100 and dispatched at 100.5 (d2); LiveKit's webhook
# for the same crash arrives at 120, when d2's agent may or may not have joined yet.
REDISPATCH = Dispatch("support", created_at=100.5, metadata="m", id="d2", job_status=JOB_PENDING)
LATE = Loss("r1", "support", at=120, source="webhook", lost_identity="agent-old", lost_joined_at=11)


@pytest.mark.parametrize(
    ("participants", "dispatches", "now", "kind", "outcome"),
    [
        # the redispatched agent is in the room: nothing to do, not a failover of its own
        ((CALLER, Participant("agent-new", KIND_AGENT, "support", joined_at=102)),
         (FIRST, REDISPATCH), 120, "done", "ended"),
        # its dispatch is still pending (made before the webhook arrived): wait
        ((CALLER,), (FIRST, REDISPATCH), 105, "wait", None),
        # nothing after the loss, the job FAILED: dispatch
        ((CALLER,), (replace_status(FIRST, JOB_FAILED),), 120, "dispatch", None),
        # the job ended on purpose (the agent hung up; caller still there): no dispatch
        ((CALLER,), (replace_status(FIRST, JOB_SUCCESS),), 120, "done", "ended"),
        # a SIP caller counts as a caller
        ((Participant("sip", KIND_SIP),), (FIRST,), 120, "dispatch", None),
        # only other agents (not ours) left: nobody to serve
        ((Participant("x", KIND_AGENT, "other", joined_at=1),), (FIRST,), 120, "done",
         "caller_gone"),
    ],
)  # fmt: skip
def test_late_notice_of_the_same_loss(
    participants: tuple[Participant, ...],
    dispatches: tuple[Dispatch, ...],
    now: float,
    kind: str,
    outcome: str | None,
) -> None:
    a = step(Case(LATE), view(*participants, dispatches=dispatches), now=now, policy=P)
    assert (a.kind, a.case.outcome) == (kind, outcome)


def test_attempts_are_counted_in_livekit_across_restarts() -> None:
    # Three dispatches after the loss that LiveKit placed, none joined: a fresh case
    # (restart) gives up.
    after = tuple(
        Dispatch("support", created_at=t, id=f"d{t}", job_status=JOB_RUNNING)
        for t in (101, 112, 125)
    )
    a = step(Case(LOSS), view(CALLER, dispatches=after), now=200, policy=P)
    assert (a.kind, a.case.outcome) == ("done", "gave_up")
    # Three LiveKit never placed (no job: no worker had a slot then) say nothing about the
    # call: with a slot now, it is dispatched again.
    dropped = tuple(Dispatch("support", created_at=t, id=f"d{t}") for t in (101, 112, 125))
    a = step(Case(LOSS), view(CALLER, dispatches=dropped), now=200, policy=P, free=1)
    assert (a.kind, a.case.attempts) == ("dispatch", 1)
    # One dispatch after the loss, timed out: the next one is attempt 2, after backoff.
    one = (Dispatch("support", created_at=101, job_status=JOB_RUNNING),)
    a = step(Case(LOSS), view(CALLER, dispatches=one), now=112, policy=P)
    assert (a.kind, a.case.attempts) == ("dispatch", 2)


def test_per_room_bound_on_dispatches() -> None:
    many = tuple(Dispatch("support", created_at=i) for i in range(10))
    a = step(Case(LOSS), view(CALLER, dispatches=many), now=200, policy=P)
    assert (a.kind, a.case.outcome) == ("done", "gave_up")
    losses, _ = orphans_from_sweep(
        [RoomView("r1", True, (CALLER,), many)], ["support"], {("r1", "support"): 0}, 200, P
    )
    assert losses == []


def test_sweep_skips_jobs_that_ended_on_purpose() -> None:
    room = RoomView("r1", True, (CALLER,), (replace_status(FIRST, JOB_SUCCESS),))
    assert orphans_from_sweep([room], ["support"], {("r1", "support"): 0}, 100, P)[0] == []
    # A dispatch the operator deleted after a deliberate end is not there at all.
    room = RoomView("r1", True, (CALLER,), ())
    assert orphans_from_sweep([room], ["support"], {("r1", "support"): 0}, 100, P)[0] == []


def test_dispatch_metadata_falls_back_to_the_rooms_latest_dispatch() -> None:
    v = view(CALLER, dispatches=(Dispatch("support", 1, "old"), Dispatch("support", 5, "new")))
    assert dispatch_metadata(Case(replace(LOSS, metadata="")), v) == "new"
    assert dispatch_metadata(Case(LOSS), v) == '{"x":1}'


def test_vanished_rooms_only_from_workers_that_answered() -> None:
    previous = {
        "ns/w1": [WorkerRoom("r1", "support", "a1"), WorkerRoom("r2", "support", "a2")],
        "ns/w2": [WorkerRoom("r3", "support", "a3")],
    }
    current = {"ns/w1": [WorkerRoom("r2", "support", "a2")]}  # w2 did not answer
    assert [r.room for r in vanished_rooms(previous, current)] == ["r1"]


SUSPECT = WorkerRoom("r1", "support", "agent-old", "", started_at=11)
NEW = Participant("agent-new", KIND_AGENT, "support", joined_at=50)


@pytest.mark.parametrize(
    ("participants", "dispatches", "now", "verdict"),
    [
        # the agent left at once: it ended the call on purpose (its job stays RUNNING)
        ((CALLER,), (FIRST,), 100, "ended"),
        ((CALLER,), (FIRST,), 102, "ended"),
        # still in the room right after: maybe leaving; still there after the grace: lost
        ((CALLER, GHOST), (FIRST,), 101, "wait"),
        ((CALLER, GHOST), (FIRST,), 103, "lost"),
        ((CALLER,), (FIRST,), 104, "lost"),  # lingered past the grace, then timed out
        ((CALLER, GHOST), (replace_status(FIRST, JOB_FAILED),), 100, "lost"),
        ((CALLER,), (replace_status(FIRST, JOB_SUCCESS),), 104, "ended"),
        ((GHOST,), (FIRST,), 104, "moot"),  # the caller is gone
        ((CALLER, NEW), (FIRST,), 104, "moot"),  # someone else serves it
    ],
)
def test_judge_vanished(
    participants: tuple[Participant, ...],
    dispatches: tuple[Dispatch, ...],
    now: float,
    verdict: str,
) -> None:
    got, loss = judge_vanished(SUSPECT, view(*participants, dispatches=dispatches), 100, now, P)
    assert got == verdict
    assert (loss is not None) == (verdict == "lost")
    if loss is not None:
        assert (loss.source, loss.lost_identity, loss.metadata, loss.since) == (
            "worker",
            "agent-old",
            "m",
            11.001,
        )


def test_deliberate_leave_from_webhook() -> None:
    attrs = {"lk.agent.name": "support"}
    assert deliberate_leave("participant_left", KIND_AGENT, attrs, 1) == "support"
    assert deliberate_leave("participant_left", KIND_AGENT, attrs, 14) is None
    assert deliberate_leave("participant_left", KIND_STANDARD, attrs, 1) is None
    assert deliberate_leave("participant_joined", KIND_AGENT, attrs, 1) is None


# --- calls LiveKit could not place (issue 13: the capacity deadlock) ----------------------

DROPPED = Dispatch("support", created_at=50, metadata="m", id="d1")  # no job: never placed


@pytest.mark.parametrize(
    ("participants", "dispatches", "now", "free", "served", "found"),
    [
        ((CALLER,), (DROPPED,), 60, 0, (), True),
        ((CALLER,), (DROPPED,), 52, 0, (), False),  # within place_seconds: may be on its way
        ((CALLER,), (DROPPED,), 60, 1, (), False),  # a slot somewhere: the sweep judges later
        ((CALLER,), (replace(DROPPED, job_status=JOB_RUNNING),), 60, 0, (), False),  # placed
        ((CALLER,), (DROPPED,), 60, 0, ("r1",), False),  # a worker lists the room
        ((CALLER, GHOST), (DROPPED,), 60, 0, (), False),  # an agent of ours is there
        ((), (DROPPED,), 60, 0, (), False),  # nobody to serve
        ((CALLER,), (), 60, 0, (), False),  # nobody asked for our agent
        ((CALLER,), (replace(DROPPED, agent_name="other"),), 60, 0, (), False),
    ],
)  # fmt: skip
def test_unplaced(
    participants: tuple[Participant, ...],
    dispatches: tuple[Dispatch, ...],
    now: float,
    free: int,
    served: tuple[str, ...],
    found: bool,
) -> None:
    loss = unplaced(view(*participants, dispatches=dispatches), "support", now, free, served, P)
    assert (loss is not None) == found
    if loss is not None:
        assert (loss.source, loss.metadata, loss.lost_identity) == ("unplaced", "m", "")


def test_a_call_waits_for_a_slot_without_using_up_attempts_then_is_dispatched() -> None:
    case = Case(Loss("r1", "support", at=60, source="unplaced", metadata="m"))
    v = view(CALLER, dispatches=(DROPPED,))
    for now in (61, 100, 1000):  # however long the fleet takes to grow
        a = step(case, v, now=now, policy=P, free=0)
        assert (a.kind, a.case.outcome, a.case.attempts) == ("wait", None, 0)
        assert a.case.waiting_since == 61 and "free slot" in a.reason
        case = a.case
    a = step(case, v, now=1001, policy=P, free=1)
    assert (a.kind, a.case.attempts, a.case.waiting_since) == ("dispatch", 1, 0.0)


def test_a_dispatch_livekit_dropped_for_want_of_a_slot_is_not_waited_on() -> None:
    """Dispatched when a slot looked free, but LiveKit had none (a race with another call):
    no job after place_seconds while the fleet is full means wait for capacity now, not
    for the 10 s join timeout."""
    case = Case(LOSS, attempts=1, last_dispatch_at=101)
    mine = (Dispatch("support", created_at=101, id="d2"),)
    assert step(case, view(CALLER, dispatches=mine), now=103, policy=P, free=0).kind == "wait"
    a = step(case, view(CALLER, dispatches=mine), now=105, policy=P, free=0)
    assert a.case.waiting_since == 105 and "free slot" in a.reason
    # With a slot somewhere, a dispatch without a job may still be on its way: wait for it.
    a = step(case, view(CALLER, dispatches=mine), now=105, policy=P, free=2)
    assert "pending" in a.reason


# --- the worker view's reducer: watch_workers --------------------------------------------


def _pod(name: str, ready: bool = True, ip: str = "127.0.0.9", restarts: int = 0) -> Any:
    from voicefleet_operator.fleet import WorkerPod

    return WorkerPod(name, ip, ready, False, restarts)


def _serving(*rooms: str) -> Any:
    from voicefleet_contract.sessions import RoomSession, SessionsReport
    from voicefleet_operator.fleet import Reading

    report = SessionsReport(
        len(rooms), 5, False, tuple(RoomSession(r, f"j-{r}", 10.0, f"agent-{r}") for r in rooms)
    )
    return Reading(report)


def _failed(error: str) -> Any:
    from voicefleet_operator.fleet import Reading

    return Reading(None, error)


def _view(**serving: tuple[str, ...]) -> Any:
    from voicefleet_operator.failover import WorkerRoom, WorkerView

    return WorkerView(
        serving={
            pod: tuple(WorkerRoom(r, "support", f"agent-{r}", "", 10.0) for r in rooms)
            for pod, rooms in serving.items()
        },
        restarts={pod: 0 for pod in serving},
    )


# (what, view before, pods now, readings now) -> (losses as (room, source), hung, vanished, served)
WATCH = [
    ("first look: what each serves", _view(), [_pod("w1")], {"w1": _serving("r1")},
     [], [], [], ["r1"]),
    ("not read yet: what it served stands", _view(w1=("r1",)), [_pod("w1")], {},
     [], [], [], []),
    ("refused: a dead process", _view(w1=("r1", "r2")), [_pod("w1")], {"w1": _failed("refused")},
     [("r1", "worker"), ("r2", "worker")], [], [], []),
    ("pod gone", _view(w1=("r1",)), [], {},
     [("r1", "pod")], [], [], []),
    ("no IP: its container restarting", _view(w1=("r1",)), [_pod("w1", ip="")], {"w1": _serving()},
     [("r1", "worker")], [], [], []),
    ("container restarted, answers at once", _view(w1=("r1",)), [_pod("w1", restarts=1)],
     {"w1": _serving()}, [("r1", "worker")], [], [], []),
    ("not ready and no answer: hung", _view(w1=("r1",)), [_pod("w1", ready=False)],
     {"w1": _failed("timeout")}, [("r1", "hung")], ["w1"], [], []),
    ("ready but unreachable: the network, not the worker", _view(w1=("r1",)), [_pod("w1")],
     {"w1": _failed("timeout")}, [], [], [], []),
    ("a room no longer served: to confirm", _view(w1=("r1", "r2")), [_pod("w1")],
     {"w1": _serving("r2")}, [], [], ["r1"], ["r2"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "view", "pods", "readings", "losses", "hung", "vanished", "served"),
    WATCH,
    ids=[w[0] for w in WATCH],
)
def test_watch_workers(
    what: str, view: Any, pods: Any, readings: Any,
    losses: list[tuple[str, str]], hung: list[str], vanished: list[str], served: list[str],
) -> None:  # fmt: skip
    from voicefleet_operator.failover import watch_workers

    seen = watch_workers(view, pods, readings, "support", 50.0)
    assert [(x.room, x.source) for x in seen.losses] == losses
    assert list(seen.hung) == hung
    assert [w.room for w in seen.vanished] == vanished
    assert sorted(seen.served) == served
    # the next view: a lost worker serves nothing, a gone one is forgotten
    lost = {x.room for x in seen.losses}
    assert not (seen.view.rooms() & lost)
    assert set(seen.view.serving) <= {p.name for p in pods}


def test_a_hung_worker_already_ended_is_not_ended_again() -> None:
    from voicefleet_operator.failover import watch_workers

    pods, readings = [_pod("w1", ready=False)], {"w1": _failed("timeout")}
    first = watch_workers(_view(w1=("r1",)), pods, readings, "support", 50.0)
    assert first.hung == ("w1",)
    again = watch_workers(first.view.ended("w1"), pods, readings, "support", 51.0)
    assert again.hung == () and again.losses == ()  # its calls were taken the first time
    # ... and a pod of that name that is gone and comes back is a new pod
    gone = watch_workers(again.view, [], {}, "support", 52.0)
    assert "w1" not in gone.view.ended_pods
