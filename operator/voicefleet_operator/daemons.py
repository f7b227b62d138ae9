"""What every long-running loop of the operator shares with kopf's daemons: whether a daemon
stopped because kopf paused this operator for a peer, and waiting for the next wake-up."""

from __future__ import annotations

import asyncio
from typing import Any, Final

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


async def wait_for_wake(timeout: float, stop: asyncio.Future[Any], *wakes: asyncio.Event) -> None:
    """Until one of `wakes` is set, `stop` is done, or `timeout` seconds pass; then a
    moment more, so a burst of changes (a pod's several watch events) makes one run."""
    waiters = [asyncio.ensure_future(w.wait()) for w in wakes]
    try:
        done, _ = await asyncio.wait(
            [*waiters, stop], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for w in waiters:
            w.cancel()
    if done and stop not in done:
        await asyncio.sleep(COALESCE_SECONDS)
