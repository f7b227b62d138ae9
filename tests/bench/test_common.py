from __future__ import annotations

import math

from bench.common import Result, percentile, summary


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile([3.0], 95) == 3.0
    assert math.isnan(percentile([], 50))
    assert summary([1.0, 2.0])["n"] == 2


def test_targets_are_judged() -> None:
    r = Result(
        "x", figures={"a": {"p95": 1.5}, "ratio": 8.0}, targets={"a.p95": "< 2", "ratio": ">= 7"}
    )
    assert r.meets() == {"a.p95": True, "ratio": True}
    r.figures["ratio"] = 3.0
    assert r.meets()["ratio"] is False
    assert "MISSES" in r.table()
