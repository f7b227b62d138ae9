"""Failover decisions (no cluster, no LiveKit): orphan detection and the dispatch rules."""

from __future__ import annotations

from voicefleet_operator.failover import (
    KIND_AGENT,
    KIND_STANDARD,
    Case,
    Dispatch,
    Loss,
    Participant,
    Policy,
    RoomView,
    WorkerRoom,
    loss_from_webhook,
    losses_from_workers,
    merge_loss,
    orphans_from_sweep,
    step,
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
    a = step(Case(LOSS), view(CALLER, GHOST), now=100.5, policy=P)
    assert a.kind == "dispatch"
    assert a.case.attempts == 1
    assert "noticed by worker" in a.reason


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
    losses = losses_from_workers(previous, unreachable=["ns/w1"], gone=["ns/w2"], now=9)
    assert sorted((x.room, x.source) for x in losses) == [("r1", "worker"), ("r2", "pod")]
    assert next(x for x in losses if x.room == "r1").metadata == "m"


def test_sweep_needs_grace_and_no_pending_dispatch() -> None:
    old = (Dispatch("support", created_at=0, metadata="m"),)
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
