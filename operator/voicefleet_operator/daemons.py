"""What the operator's loops share: their one tick, the coalescing moment, and whether a
kopf daemon stopped because kopf paused this operator for a peer."""

from __future__ import annotations

from typing import Final

import kopf

# How often a loop looks again while something is in motion (a scale-down waiting out
# its window, a worker not answering, a failover case open): the autoscaler's and
# failover's one tick.
TICK_SECONDS: Final = 1.0
# A moment after a wake-up before acting: a burst of changes (one pod's several watch
# events) makes one run.
COALESCE_SECONDS: Final = 0.05


def paused_for_a_peer(reason: kopf.DaemonStoppingReason | None) -> bool:
    """A daemon stopped for this `reason` (its `stopped.reason`) because kopf paused the
    operator for a peer with a higher priority: its watch streams ended, so what they fed
    is stale from now on. Pure."""
    return reason is not None and bool(reason & kopf.DaemonStoppingReason.OPERATOR_PAUSING)
