"""Table tests for the built-in autoscaler's decision function (no cluster)."""

from __future__ import annotations

import pytest

from voicefleet_operator.autoscaler import (
    Decision,
    PodSample,
    Policy,
    Recommendation,
    decide,
    deletion_costs,
    free_slots,
    needed_replicas,
)
from voicefleet_operator.fleet import WorkerPod

P = Policy(min_replicas=1, max_replicas=10, max_per_worker=10, target_utilization=0.7,
           buffer_sessions=4, scale_up_step=4, scale_down_step=1, stabilization_seconds=60)  # fmt: skip


def pods(*active: int | None, capacity: int = 10) -> list[PodSample]:
    return [PodSample(f"p{i}", a, capacity) for i, a in enumerate(active)]


@pytest.mark.parametrize(
    ("sessions", "buffer", "expected"),
    [(0, 0, 0), (0, 4, 1), (3, 4, 1), (10, 4, 2), (14, 0, 2), (15, 0, 3), (30, 4, 5)],
)
def test_needed_replicas(sessions: int, buffer: int, expected: int) -> None:
    policy = Policy(max_per_worker=10, target_utilization=0.7, buffer_sessions=buffer)
    assert needed_replicas(sessions, policy) == expected


def test_no_pods_holds_current_within_bounds() -> None:
    d = decide(0, [], 3, P)
    assert (d.desired, d.direction) == (3, "none")
    assert "no ready workers" in d.reason
    assert decide(0, [], 20, P).desired == 10  # bounds still apply


def test_no_pods_and_zero_replicas_starts_buffer() -> None:
    assert decide(0, [], 0, P).desired == 1  # min 1
    zero = Policy(min_replicas=0, max_replicas=5, buffer_sessions=0)
    assert decide(0, [], 0, zero).desired == 0  # min 0, no buffer: stay at zero


def test_all_full_scales_up_at_once_by_bounded_step() -> None:
    d = decide(0, pods(10, 10), 2, P)  # 24 demand -> 4 workers
    assert (d.desired, d.direction, d.sessions, d.capacity) == (4, "up", 20, 20)
    big = decide(0, pods(10, 10), 2, Policy(max_replicas=50, buffer_sessions=60, scale_up_step=4))
    assert big.desired == 6  # 80/7 -> 12 needed, but +4 per decision
    assert "step limited" in big.reason


def test_unanswered_pod_counts_as_full_never_empty() -> None:
    d = decide(0, pods(0, None), 2, P)
    assert d.sessions == 10
    assert d.unanswered == 1
    assert d.desired == 2  # 10 + 4 buffer needs 2: no scale-down despite an idle pod


def test_scale_down_waits_for_the_window_then_steps() -> None:
    hist: tuple[Recommendation, ...] = ()
    d = decide(0, pods(10, 10, 10), 3, P, hist)  # needs 5: up
    assert d.direction == "up"
    hist = d.history
    # Demand drops: recommendation 1, but 5 was recommended 10 s ago.
    d = decide(10, pods(0, 0, 0), 3, P, hist)
    assert (d.desired, d.direction) == (3, "none")
    assert "stabilisation" in d.reason
    # After the window: down by one step only.
    d = decide(61, pods(0, 0, 0), 3, P, d.history)
    assert (d.desired, d.direction) == (2, "down")


def test_flapping_demand_never_scales_down_inside_window() -> None:
    hist: tuple[Recommendation, ...] = ()
    current = 2
    seen: list[Decision] = []
    for t in range(0, 50, 5):  # demand alternates between 20 and 0 sessions
        d = decide(t, pods(10, 10) if t % 10 == 0 else pods(0, 0), current, P, hist)
        seen.append(d)
        hist = d.history
        current = d.desired
    assert all(d.direction != "down" for d in seen)


def test_max_reached_is_reported() -> None:
    d = decide(0, pods(*([10] * 10)), 10, P)
    assert d.desired == 10
    assert d.limited_by_max
    assert "maxReplicas=10" in d.reason


def test_min_zero_scales_to_zero_when_idle_without_buffer() -> None:
    policy = Policy(min_replicas=0, max_replicas=5, buffer_sessions=0, stabilization_seconds=0)
    d = decide(100, pods(0), 1, policy)
    assert (d.desired, d.direction) == (0, "down")


def test_draining_pods_count_sessions_not_capacity() -> None:
    samples = [PodSample("a", 5, 10), PodSample("b", 3, 10, draining=True)]
    d = decide(0, samples, 2, P)
    assert (d.sessions, d.capacity) == (8, 10)


def test_policy_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="minReplicas"):
        Policy(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="targetUtilization"):
        Policy(target_utilization=0)


def test_deletion_costs_put_idle_first_and_unknown_last() -> None:
    costs = deletion_costs(
        [PodSample("idle", 0, 10), PodSample("busy", 7, 10), PodSample("hung", None, 10)]
    )
    assert sorted(costs, key=costs.__getitem__) == ["idle", "busy", "hung"]


def test_a_fleet_is_settled_only_when_time_alone_changes_nothing() -> None:
    """Settled: the loop sleeps until the feed wakes it; unsettled: it runs every second."""
    from voicefleet_operator.autoscale_loop import at_rest
    from voicefleet_operator.autoscaler import samples_of

    policy = Policy(min_replicas=1, max_replicas=5, max_per_worker=10, target_utilization=1.0,
                    stabilization_seconds=30)  # fmt: skip
    calm = [PodSample("a", 3, 10), PodSample("b", 4, 10)]
    d = decide(0.0, calm, 1, policy)
    assert d.desired == 1 and at_rest(d, 1)
    # A scale-down waiting out its window: still moving.
    busy = decide(0.0, [PodSample("a", 15, 10), PodSample("b", 4, 10)], 2, policy)
    quiet = decide(1.0, calm, 2, policy, busy.history)
    assert quiet.desired == 2 and not at_rest(quiet, 2)
    assert at_rest(decide(40.0, calm, 1, policy, quiet.history), 1)
    # A worker that does not answer: keep looking every second.
    assert not at_rest(decide(0.0, [PodSample("a", None, 10)], 1, policy), 1)
    assert at_rest(None, None)  # no Deployment yet: its creation wakes the loop
    # A pod not read yet is left out of the samples, a failed read counts as full.
    pods = [WorkerPod("a", "10.0.0.1", True, False), WorkerPod("b", "10.0.0.2", True, False)]
    assert samples_of(pods, {"a": None}, 10) == [PodSample("a", None, 10)]


def test_replicas_change_at_most_once_a_second() -> None:
    """The loop runs on every event, its own scaling's included: steps stay a second apart."""
    from voicefleet_operator.autoscale_loop import pace

    policy = Policy(min_replicas=1, max_replicas=5, max_per_worker=10, target_utilization=1.0,
                    stabilization_seconds=0)  # fmt: skip
    down = decide(10.0, [PodSample("a", 0, 10)] * 4, 4, policy)
    assert down.desired == 3
    assert pace(down, 4, 10.0, None).desired == 3  # nothing changed lately: at once
    held = pace(down, 4, 10.4, 10.0)  # 0.4 s after the last change: wait
    assert (held.desired, held.direction) == (4, "none") and "next step" in held.reason
    assert pace(down, 4, 11.0, 10.0).desired == 3
    same = decide(10.0, [PodSample("a", 5, 10)], 1, policy)
    assert pace(same, 1, 10.1, 10.0) == same


@pytest.mark.parametrize(
    ("target", "active", "waiting", "expected"),
    [
        # Every worker exactly at maxPerWorker (5), no buffer: a call LiveKit could not
        # place asks for one more worker at once, at targetUtilization 1.0 and 0.7.
        (1.0, (5, 5), 0, 2),
        (1.0, (5, 5), 1, 3),
        (1.0, (5, 5), 6, 4),  # 16 / 5
        (0.7, (5, 5), 0, 3),  # 10 / 3.5
        (0.7, (5, 5), 1, 4),  # 11 / 3.5
    ],
)
def test_calls_waiting_for_an_agent_count_as_demand(
    target: float, active: tuple[int, ...], waiting: int, expected: int
) -> None:
    policy = Policy(max_replicas=10, max_per_worker=5, target_utilization=target, scale_up_step=4)
    d = decide(0, pods(*active, capacity=5), len(active), policy, waiting=waiting)
    assert d.desired == min(expected, len(active) + 4), d
    assert d.waiting == waiting
    assert d.sessions == sum(active)  # live sessions stay what the workers serve
    if waiting:
        assert f"{waiting} waiting for an agent" in d.reason


def test_waiting_calls_never_let_the_fleet_shrink() -> None:
    policy = Policy(min_replicas=1, max_per_worker=5, target_utilization=1.0)
    d = decide(0, pods(5, 0, capacity=5), 2, policy, waiting=1, history=())
    assert d.desired == 2  # 5 + 1 waiting need 2


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], 0),
        ([PodSample("a", 5, 5), PodSample("b", 5, 5)], 0),
        ([PodSample("a", 4, 5), PodSample("b", 5, 5)], 1),
        ([PodSample("a", 0, 5), PodSample("b", None, 5)], 5),  # unanswered counts as full
        ([PodSample("a", 0, 5, draining=True), PodSample("b", 3, 5)], 2),  # draining takes none
    ],
)
def test_free_slots(samples: list[PodSample], expected: int) -> None:
    assert free_slots(samples) == expected
