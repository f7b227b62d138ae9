"""bench/call.py's arithmetic: what is subtracted, the worker's own share against the echo
baseline, where the ladder's maximum lands, and how a py-spy profile is read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import call
from bench.call import Level, _idle, _short, baseline_for, own_overhead, parse_args, result


def _level(target: str, n: int, overhead_ms: list[float], unanswered: int = 0) -> Level:
    lv = Level(target, n, unanswered=unanswered)
    lv.overhead_s = [v / 1000 for v in overhead_ms]
    lv.latency_s = [v + 0.5 for v in lv.overhead_s]
    lv.dispatch_s = [0.3] * n
    lv.turns = len(overhead_ms) + unanswered
    return lv


def test_own_share_is_measured_against_the_echo_at_the_same_or_nearest_lower_level() -> None:
    echo = {1: _level("echo", 1, [200, 220]), 10: _level("echo", 10, [300, 400])}
    assert baseline_for(5, echo) is echo[1]
    assert baseline_for(10, echo) is echo[10]
    assert baseline_for(0, echo) is None
    worker = _level("worker", 10, [330, 430])
    assert own_overhead(worker, echo) == pytest.approx(0.030)


def test_maximum_is_the_last_level_before_the_first_over_target() -> None:
    args = parse_args(["--sizes", "1,5,10", "--model-delay-ms", "200", "--silence-ms", "300"])
    echo = {n: _level("echo", n, [200, 210]) for n in (1, 5, 10)}
    levels = [
        _level("worker", 1, [210, 220]),  # own p95 10 ms
        _level("worker", 5, [230, 249]),  # own p95 39 ms
        _level("worker", 10, [240, 300]),  # own p95 90 ms: crosses
    ]
    r = result(args, echo, levels, {})
    assert r.figures["max_sessions_within_target"] == 5
    assert r.figures["crossed_at_sessions"] == 10
    assert r.figures["max_sessions_all_turns_answered"] == 10
    assert r.figures["subtracted_ms"] == {"model_delay": 200, "turn_detection_silence": 300}
    assert r.figures["worker_minus_echo"]["n10"]["own_overhead_p95_ms"] == pytest.approx(90.0)
    meets = r.meets()
    assert meets["worker_minus_echo.n1.own_overhead_p95_ms"] is True
    assert meets["worker_minus_echo.n10.own_overhead_p95_ms"] is False
    assert meets["worker.n1.dispatch_ms.p95"] is True  # 300 ms < 500 ms


def test_an_unanswered_turn_ends_the_maximum() -> None:
    args = parse_args(["--sizes", "1,5"])
    echo = {1: _level("echo", 1, [200])}
    levels = [_level("worker", 1, [200]), _level("worker", 5, [200], unanswered=1)]
    r = result(args, echo, levels, {})
    assert r.figures["max_sessions_within_target"] == 1
    assert r.figures["max_sessions_all_turns_answered"] == 1
    assert r.figures["crossed_at_sessions"] == 5


def test_profile_counts_only_active_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call, "REPO", tmp_path)
    (tmp_path / "bench" / "results").mkdir(parents=True)
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (1): main;run (/x/asyncio/base_events.py:1);EpollSelector.select (/x/selectors.py:468) 90\n"
        "thread (2): job;run (/x/asyncio/base_events.py:1);put (/x/livekit/rtc/_ffi_client.py:124) 6\n"
        "thread (2): job;run (/x/asyncio/base_events.py:1);observe (/x/voicefleet_worker/observe.py:9) 4\n"
    )
    done = subprocess.Popen(["true"])
    done.wait()
    p = call._stop_profile(done, raw)
    assert p["samples"] == 100 and p["active_share"] == 0.1
    assert p["active_by_package"] == {"livekit rtc (FFI)": 0.6, "voicefleet_worker": 0.4}
    assert _idle("EpollSelector.select (/x/selectors.py:468)")
    assert not _idle("uuid4 (/x/uuid.py:723)")
    assert _short("f (/a/b/c.py:12)") == "f (c.py:12)"
