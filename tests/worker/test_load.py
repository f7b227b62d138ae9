"""Session-based load: what livekit-agents' dispatcher sees for each worker state."""

from __future__ import annotations

import pytest

from voicefleet_worker.load import (
    LOAD_THRESHOLD,
    accepts,
    effective_load,
    idle_processes,
    session_load,
    status,
)


@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 10, 100, 1000])
def test_full_exactly_at_capacity(capacity: int) -> None:
    for active in range(capacity):
        assert status(active, capacity) == "AVAILABLE"
        assert accepts(active, 0, capacity)
    assert status(capacity, capacity) == "FULL"
    assert not accepts(capacity, 0, capacity)


@pytest.mark.parametrize("capacity", [2, 3, 6, 10, 49, 1000])
def test_reserved_offers_never_overbook(capacity: int) -> None:
    """Offers accepted but not yet launched count: never more than capacity jobs."""
    for active in range(1, capacity + 1):
        reserved = 0
        while accepts(active, reserved, capacity):
            reserved += 1
        assert active + reserved <= capacity


@pytest.mark.parametrize("capacity", [1, 2, 4, 10])
def test_idle_worker_takes_concurrent_offers_conservatively(capacity: int) -> None:
    reserved = 0
    while accepts(0, reserved, capacity):
        reserved += 1
    assert 1 <= reserved <= min(capacity, idle_processes(capacity))


def test_load_values() -> None:
    assert session_load(0, 10) == 0.0
    assert session_load(5, 10) == 0.5
    assert session_load(12, 10) == 1.0
    assert session_load(1, 0) == 1.0
    assert effective_load(2, 1, 3) >= LOAD_THRESHOLD


def test_draining_refuses_and_reports_full() -> None:
    assert not accepts(0, 0, 10, draining=True)
    assert status(0, 10, draining=True) == "FULL"
