from __future__ import annotations

import pytest

from bench.autoscale_plan import (
    Plan,
    hpa_acts,
    parse_sizes,
    ratios,
    reaction_summary,
    step_sessions,
)


def test_a_step_needs_exactly_one_more_worker() -> None:
    for current in range(1, 9):
        sessions = step_sessions(current, 10)
        assert -(-sessions // 10) == current + 1  # ceil at targetUtilization 1


def test_the_hpa_tolerance_swallows_one_more_worker_from_ten_up() -> None:
    assert hpa_acts(9, 10, step_sessions(9, 10))  # 100 / 90: 1.11
    assert not hpa_acts(10, 10, step_sessions(10, 10))  # 110 / 100: 1.1, within 0.1
    assert not hpa_acts(20, 10, step_sessions(20, 10))


def test_plan_spreads_steps_and_leaves_room() -> None:
    p = Plan(workers=10, voiceagents=10, steps=25).check()
    assert p.per_voiceagent == 1
    assert p.rounds() == [3] * 5 + [2] * 5
    assert sum(p.rounds()) == 25
    assert p.max_replicas == 1 + 3 + 1
    big = Plan(workers=200, voiceagents=100, steps=30).check()
    assert big.per_voiceagent == 2 and max(big.rounds()) == 1


def test_plan_refuses_steps_the_hpa_would_not_see() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        Plan(workers=200, voiceagents=20, steps=30).check()  # 10 workers a VoiceAgent
    with pytest.raises(ValueError, match="tolerance"):
        Plan(workers=10, voiceagents=1, steps=20).check()
    with pytest.raises(ValueError, match="split"):
        Plan(workers=10, voiceagents=3, steps=20).check()


def test_parse_sizes() -> None:
    assert parse_sizes("10:10, 200:100") == [(10, 10), (200, 100)]
    assert parse_sizes("10") == [(10, 10)]


def test_p95_only_from_twenty_samples() -> None:
    few = reaction_summary([1.0] * 19)
    assert "p95" not in few and few["max"] == 1.0 and few["n"] == 19
    enough = reaction_summary([float(v) for v in range(1, 21)])
    assert enough["p95"] == 19.0 and enough["max"] == 20.0


def test_ratios_use_the_tail_both_report() -> None:
    ours = {"n": 20, "p50": 0.5, "p95": 1.0, "max": 2.0}
    assert ratios({"n": 20, "p50": 10.0, "p95": 20.0, "max": 25.0}, ours) == {
        "p50": 20.0,
        "p95": 20.0,
    }
    assert ratios({"n": 5, "p50": 10.0, "max": 30.0}, ours) == {"p50": 20.0, "max": 15.0}
