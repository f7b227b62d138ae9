"""LiveKit's capacity model, as the worker reports it and the operator plans it. Pure.

livekit-server (v1.13.5, `pkg/service/agentservice.go`) offers a job only while some
AVAILABLE worker of the agent name reports a load below the server's `agents.target_load`
(default 0.7): the job's affinity is the sum of `max(0, target_load - load)`, and a job
whose affinity is 0 everywhere fails with "no servers available" and is dropped. Among
AVAILABLE workers it then picks one at random weighted by `1 - load`.

So a worker with `maxPerWorker` slots reports `load = target_load * active / maxPerWorker`:
the server's line is reached exactly when every slot is taken, and below it a worker with
one free slot still gets offers. livekit-agents' own `load_threshold` (FULL, and refusing
offers) is set to the same line. The autoscaler and `status.capacity` count
`maxPerWorker` per ready worker, which is then what LiveKit really dispatches.

`spec.livekit.targetLoad` must mirror the server's `agents.target_load`: with a server
line lower than ours, LiveKit stops offering at `server / ours * maxPerWorker` sessions.
"""

from __future__ import annotations

import struct
from typing import Final

# livekit-server's default `agents.target_load` (pkg/agent/config.go DefaultTargetLoad).
DEFAULT_TARGET_LOAD: Final = 0.7
# spec.sessions.maxPerWorker's default: the largest level of bench/results/call.json at
# which one worker (threads or processes) answered every turn; docs/worker.md, "Where
# jobs run", has the curve and why the 50 ms own-overhead figure is lower on the 2-core
# machine that measured it.
DEFAULT_MAX_PER_WORKER: Final = 5
# A worker's default resource requests, from the same file at that level: the stock agent
# (jobs in threads) used 0.56 cores and 157 MiB PSS at 5 sessions. An agent module of one's
# own runs jobs in processes: about 300 MiB idle (the warm pool) plus 40-60 MiB per call.
DEFAULT_WORKER_REQUESTS: Final = {"cpu": "600m", "memory": "256Mi"}
MIN_TARGET_LOAD: Final = 0.05
MAX_TARGET_LOAD: Final = 1.0
# The FULL line sits this fraction under the target: livekit-agents adds float shares of
# reserved jobs ((n-1)/n + 1/n of the target) that may round to just below the target and
# must still count as full. maxPerWorker <= 1000 keeps one slot (>= target/1000) far above.
_FULL_MARGIN: Final = 1e-6


def reported_load(active: int, max_per_worker: int, target_load: float) -> float:
    """The load a worker reports to LiveKit: `target_load` exactly when full."""
    if max_per_worker <= 0 or active >= max_per_worker:
        # Exactly the target: as a float32 on the wire it equals the server's float32
        # target, so the job affinity is 0, not a rounding crumb above it.
        return target_load
    return target_load * max(0, active) / max_per_worker


def full_threshold(target_load: float) -> float:
    """livekit-agents' `load_threshold`: at or above it the worker is FULL."""
    return target_load * (1.0 - _FULL_MARGIN)


def float32(x: float) -> float:
    """`x` as LiveKit holds it (the protocol's load and the server's target are float32)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def server_offers(load: float, target_load: float) -> bool:
    """Whether livekit-server offers jobs to an AVAILABLE worker reporting `load` (the
    worker's share of the job affinity is positive), computed in float32 as it does."""
    return float32(target_load) - float32(load) > 0


def free_slots(active: int, max_per_worker: int) -> int:
    return max(0, max_per_worker - max(0, active))


__all__ = [
    "DEFAULT_TARGET_LOAD",
    "MAX_TARGET_LOAD",
    "MIN_TARGET_LOAD",
    "float32",
    "free_slots",
    "full_threshold",
    "reported_load",
    "server_offers",
]
