"""Names for the stack's LiveKit nodes (1-based) and how to tell them apart at run time.

Node 1 keeps the names a single-node stack always had (process `livekit-server`, port
`livekit`, config `livekit.yaml`), so nothing changes for existing stacks and tests; node
n > 1 is `livekit-server-<n>`, port `livekit-<n>`, and so on.
"""

from __future__ import annotations

import re
import urllib.request

LIVEKIT_PART = "livekit-server"
REDIS_PART = "redis"
MAX_NODES = 8  # ports and processes per node; two is what the tests need


def part(n: int) -> str:
    """The process (Stack part) name of node n: `livekit-server`, `livekit-server-2`..."""
    return LIVEKIT_PART if n == 1 else f"{LIVEKIT_PART}-{n}"


def port_key(n: int, what: str = "") -> str:
    """The `StackState.ports` key of node n's signalling port, or of `what` ("rtc-udp",
    "metrics") of it: `livekit`, `livekit-rtc-udp`, `livekit-2`, `livekit-2-metrics`."""
    base = "livekit" if n == 1 else f"livekit-{n}"
    return f"{base}-{what}" if what else base


def config_name(n: int) -> str:
    return "livekit.yaml" if n == 1 else f"livekit-{n}.yaml"


def region(n: int) -> str:
    """Node n's region, its name in LiveKit: the JoinResponse's `ServerInfo.region` names
    the node that hosts the room."""
    return f"node-{n}"


def regions(count: int) -> tuple[str, ...]:
    return tuple(region(n) for n in range(1, count + 1))


def check_shape(nodes: int, redis: bool) -> None:
    """More than one node needs Redis (it is how they share rooms and routes)."""
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"livekit_nodes: {nodes} (1 to {MAX_NODES})")
    if nodes > 1 and not redis:
        raise ValueError(f"livekit_nodes: {nodes} LiveKit nodes need Redis")


# Every livekit_* series carries the node's id as a constant label
# (pkg/telemetry/prometheus: ConstLabels node_id, node_type).
_NODE_ID = re.compile(r'^livekit_\w+\{[^}]*node_id="([^"]+)"', re.MULTILINE)


def node_id_from_metrics(text: str) -> str | None:
    """The node id in a livekit-server's Prometheus exposition, if any series names it."""
    m = _NODE_ID.search(text)
    return m.group(1) if m else None


def fetch_node_id(metrics_url: str, timeout: float = 2.0) -> str:
    """The id a running node registered under (new at every start), from its /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as r:
        node_id = node_id_from_metrics(r.read().decode(errors="replace"))
    if node_id is None:
        raise RuntimeError(f"no node_id label in {metrics_url}")
    return node_id
