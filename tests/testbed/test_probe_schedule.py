"""The node agent probes on the kubelet's schedule (a Go time.Ticker), not period + probe
time apart: a hung worker turns not ready as soon as on a real node."""

from __future__ import annotations

import pytest

from voicefleet_testbed.nodeagent.probes import ProbeTicker, next_probe


@pytest.mark.parametrize(
    ("now", "due", "period", "expected"),
    [
        (10.0, 11.0, 1.0, (1.0, 12.0)),  # a quick probe: wait for the tick
        (10.25, 11.0, 1.0, (0.75, 12.0)),
        (11.0, 11.0, 1.0, (0.0, 12.0)),  # finished on the tick: at once
        (11.2, 11.0, 1.0, (0.0, 12.0)),  # a 1 s timeout overran the tick: at once
        (13.5, 11.0, 1.0, (0.0, 14.0)),  # ticks missed beyond the one kept are dropped
        (20.0, 12.0, 10.0, (0.0, 22.0)),
        (5.0, 12.0, 10.0, (7.0, 22.0)),
    ],
)
def test_next_probe(now: float, due: float, period: float, expected: tuple[float, float]) -> None:
    assert next_probe(now, due, period) == pytest.approx(expected)


async def test_a_hung_containers_probes_fail_one_period_apart() -> None:
    """Each probe of a hung container takes its whole 1 s timeout; at a 1 s period the
    kubelet runs the next at once, so two failures take 2 s, not 3 s."""
    t = [0.0]
    ticker = ProbeTicker(1.0, clock=lambda: t[0])
    starts = []
    for _ in range(3):
        starts.append(t[0])
        t[0] += 1.0  # the probe times out
        await ticker.tick()
    assert starts == [0.0, 1.0, 2.0]
