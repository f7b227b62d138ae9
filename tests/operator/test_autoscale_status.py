"""What the built-in autoscaler owns in a VoiceAgent's status, and when it writes it (pure)."""

from __future__ import annotations

from voicefleet_operator.autoscale_loop import status_patch
from voicefleet_operator.autoscaler import PodSample, Policy, decide

POLICY = Policy(
    min_replicas=1,
    max_replicas=5,
    max_per_worker=10,
    target_utilization=0.7,
    buffer_sessions=0,
    scale_up_step=4,
    scale_down_step=1,
    stabilization_seconds=30,
)


def test_the_sessions_column_is_written_with_active_sessions() -> None:
    d = decide(0.0, [PodSample("w0", 3, 10)], 1, POLICY)
    patch = status_patch(d, {"capacity": 10})
    assert patch is not None
    assert patch["activeSessions"] == 3 and patch["sessions"] == "3/10"
    # Without the reconciler's capacity yet: the sampled workers' capacity.
    patch = status_patch(d, {})
    assert patch is not None and patch["sessions"] == f"3/{d.capacity}"


def test_written_only_when_the_live_status_differs_and_repaired_after_a_stale_write() -> None:
    d = decide(0.0, [PodSample("w0", 7, 10)], 1, POLICY)
    written = status_patch(d, {"capacity": 10})
    assert written is not None
    live = {"capacity": 10, **written}
    assert status_patch(d, live) is None  # nothing to say: no write, no API call
    # A reconcile that read the VoiceAgent before that write puts back its older view:
    stale = {**live, "activeSessions": 4, "sessions": "4/10"}
    assert status_patch(d, stale) == written
