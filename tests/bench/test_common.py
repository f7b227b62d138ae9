from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from bench import common
from bench.common import Result, Run, effective_flags, idle_per_unit, percentile, summary


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile([3.0], 95) == 3.0
    assert math.isnan(percentile([], 50))
    assert summary([1.0, 2.0])["n"] == 2
    assert "p95" not in summary([1.0] * 19)  # by default: from 20 samples on


def test_targets_are_judged() -> None:
    r = Result(
        "x", figures={"a": {"p95": 1.5}, "ratio": 8.0}, targets={"a.p95": "< 2", "ratio": ">= 7"}
    )
    assert r.meets() == {"a.p95": True, "ratio": True}
    r.figures["ratio"] = 3.0
    assert r.meets()["ratio"] is False
    assert "MISSES" in r.table()


def test_summary_claims_a_p95_only_from_enough_samples() -> None:
    assert "p95" not in summary([1.0, 2.0], min_p95_n=20)
    assert summary([1.0] * 20, min_p95_n=20)["p95"] == 1.0


def test_effective_flags_keep_the_last_value_of_a_flag() -> None:
    argv = ["--resync-seconds=5", "--log-format=text", "--resync-seconds=600", "--x"]
    assert effective_flags(argv) == ["--resync-seconds=600", "--log-format=text", "--x"]


def test_run_records_start_end_revision_and_load() -> None:
    rec = Run(flags=["--steps", "3"], operator_flags=["--resync-seconds=600"]).record()
    assert rec["started"] <= rec["ended"]
    assert rec["dirty_at_start"] == rec["revision_at_start"].endswith("-dirty")
    assert len(rec["load_before"]) == len(rec["load_after"]) == 3
    assert rec["operator_flags"] == ["--resync-seconds=600"]


def test_a_tree_is_dirty_for_changed_code_not_for_written_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "bench" / "results" / "a.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    monkeypatch.setattr(common, "REPO", tmp_path)
    (tmp_path / "bench" / "results" / "a.json").write_text('{"new": 1}\n')
    (tmp_path / "bench" / "results" / "b.json").write_text("{}\n")
    assert not common.machine()["git_revision"].endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert common.machine()["git_revision"].endswith("-dirty")


def test_idle_cpu_per_voiceagent_and_per_worker_pod_in_millicores() -> None:
    assert idle_per_unit(0.05, 1000, 2000) == {
        "idle_cpu_millicores_per_voiceagent": pytest.approx(0.05),
        "idle_cpu_millicores_per_worker_pod": pytest.approx(0.025),
    }
    nothing = idle_per_unit(0.05, 0, 0)
    assert all(math.isnan(v) for v in nothing.values())  # no units: no figure, not a zero
