"""bench.cluster.LastEvent: the benchmark's "nothing changing" before it measures idle."""

from __future__ import annotations

import math
import time

from bench.cluster import LastEvent


def test_quiet_once_no_event_came_for_the_period() -> None:
    events = LastEvent()
    events.see(time.monotonic())
    waited = events.wait_quiet(0.2, deadline=5.0)
    assert 0.1 <= waited < 5.0


def test_not_quiet_while_events_keep_coming_until_the_deadline() -> None:
    events = LastEvent()
    events.see(time.monotonic() + 60)  # as if one arrived a moment ago, for a minute
    assert math.isnan(events.wait_quiet(0.1, deadline=0.3))
