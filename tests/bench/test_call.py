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
    echo = {n: _level("echo", n, [200, 210] * 10) for n in (1, 5, 10)}
    levels = [
        _level("worker", 1, [210, 220] * 10),  # own p95 10 ms
        _level("worker", 5, [230, 249] * 10),  # own p95 39 ms
        _level("worker", 10, [240, 300] * 10),  # own p95 90 ms: crosses
    ]
    r = result(args, echo, {"resume_on": levels}, {})
    assert r.figures["max_sessions_within_target"] == {"resume_on": 5}
    assert r.figures["crossed_at_sessions"] == {"resume_on": 10}
    assert r.figures["max_sessions_all_turns_answered"] == {"resume_on": 10}
    assert r.figures["subtracted_ms"] == {"model_delay": 200, "turn_detection_silence": 300}
    own = r.figures["worker_minus_echo"]["resume_on"]["n10"]["own_overhead_p95_ms"]
    assert own == pytest.approx(90.0)
    meets = r.meets()
    assert meets["worker_minus_echo.resume_on.n1.own_overhead_p95_ms"] is True
    assert meets["worker_minus_echo.resume_on.n10.own_overhead_p95_ms"] is False


def test_each_mode_has_its_own_maximum_against_the_same_echo() -> None:
    args = parse_args(["--sizes", "1,5"])
    echo = {n: _level("echo", n, [200] * 20) for n in (1, 5)}
    on = [_level("worker", 1, [210] * 20), _level("worker", 5, [300] * 20)]
    off = [_level("worker", 1, [210] * 20), _level("worker", 5, [220] * 20)]
    r = result(args, echo, {"resume_on": on, "resume_off": off}, {})
    assert r.figures["max_sessions_within_target"] == {"resume_on": 1, "resume_off": 5}
    assert r.figures["worker"]["resume_off"]["n5"]["overhead_ms"]["p95"] == pytest.approx(220)
    assert "worker.resume_on.n1.dispatch_ms.p95" not in r.meets()  # 1 dispatch: no p95


def test_a_p95_needs_twenty_samples_and_every_level_gets_them() -> None:
    args = parse_args(["--sizes", "1,5,10,20", "--turns", "3"])
    setup = call.Setup(None, "a", None, 0.2, 0.3, args.turns, 1.0)  # type: ignore[arg-type]
    assert [setup.turns_at(n) * n >= 20 for n in args.sizes] == [True] * 4
    assert [setup.turns_at(n) for n in args.sizes] == [20, 4, 3, 3]
    few = _level("worker", 1, [200] * 19).figures(0.2)["overhead_ms"]
    assert "p95" not in few and few["max"] == pytest.approx(200)


def test_worker_modes_are_executor_times_resume_and_checked() -> None:
    assert parse_args([]).modes == ["process_resume_on", "thread_resume_on"]
    got = parse_args(["--executors", "thread", "--resume", "on,off"]).modes
    assert got == ["thread_resume_on", "thread_resume_off"]
    assert call.executor_of("thread_resume_off") == "thread"
    assert call.worker_agent("a", "process_resume_on") == "a-process-on"
    for bad in (["--resume", "maybe"], ["--executors", "fork"], ["--executors", ""]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_cpu_and_memory_cover_the_whole_process_tree(tmp_path: Path) -> None:
    """A child's CPU counts after its parent reaped it."""
    import sys

    script = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < 0.5: pass\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('reaped', flush=True)\n"
        "time.sleep(30)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"reaped"
        assert call.tree(p.pid) == [p.pid]
        assert call.cpu_seconds(p.pid) >= 0.4  # clock ticks: a little less than spent
        assert call.pss_mb(p.pid) > 1
    finally:
        p.kill()
        p.wait()


def test_an_unanswered_turn_ends_the_maximum() -> None:
    args = parse_args(["--sizes", "1,5"])
    echo = {1: _level("echo", 1, [200])}
    levels = [_level("worker", 1, [200]), _level("worker", 5, [200], unanswered=1)]
    r = result(args, echo, {"resume_on": levels}, {})
    assert r.figures["max_sessions_within_target"] == {"resume_on": 1}
    assert r.figures["max_sessions_all_turns_answered"] == {"resume_on": 1}
    assert r.figures["crossed_at_sessions"] == {"resume_on": 5}


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


def test_waiting_for_a_cpu_never_goes_negative_when_threads_end() -> None:
    before = {1: 5.0, 2: 3.0, 3: 9.0}  # thread 3 ends before the second read
    after = {1: 6.5, 2: 3.0, 4: 0.25}  # thread 4 started in between
    assert call.waited_since(before, after) == pytest.approx(1.75)


def test_no_own_share_p95_from_fewer_than_twenty_answered_turns() -> None:
    args = parse_args(["--sizes", "20"])
    echo = {20: _level("echo", 20, [200] * 5)}  # 5 of its turns answered
    levels = [_level("worker", 20, [300] * 30)]
    own = result(args, echo, {"resume_on": levels}, {}).figures["worker_minus_echo"]
    assert "own_overhead_p95_ms" not in own["resume_on"]["n20"]
    assert own["resume_on"]["n20"]["own_overhead_p50_ms"] == pytest.approx(100)
