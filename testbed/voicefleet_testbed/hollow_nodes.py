"""Names for the node agent's hollow nodes (1-based), as livekit_nodes.py names LiveKit's.

Node 1 keeps the names a stack always had (process `node-agent`, Node `testbed-node`, pods
under `pods/`, targets in `prometheus-pod-targets.json`); node n > 1 (`Stack.add_hollow_node`,
for what needs pods on more than one node, such as a node lost with every pod on it) is
`node-agent-<n>`, `testbed-node-<n>`, `pods-<n>/`, `prometheus-pod-targets-<n>.json`.
"""

from __future__ import annotations

NODE_AGENT_PART = "node-agent"
NODE_NAME = "testbed-node"
MAX_NODES = 4


def part(n: int) -> str:
    return NODE_AGENT_PART if n == 1 else f"{NODE_AGENT_PART}-{n}"


def node_name(n: int) -> str:
    return NODE_NAME if n == 1 else f"{NODE_NAME}-{n}"


def pods_subdir(n: int) -> str:
    return "pods" if n == 1 else f"pods-{n}"


def targets_file(n: int) -> str:
    return "prometheus-pod-targets.json" if n == 1 else f"prometheus-pod-targets-{n}.json"


TARGETS_GLOB = "prometheus-pod-targets*.json"  # every node's file (file_sd takes a glob)


def number(node: str) -> int | None:
    """n of a hollow node's name, None for any other node (the real one)."""
    if node == NODE_NAME:
        return 1
    head, _, tail = node.rpartition("-")
    return int(tail) if head == NODE_NAME and tail.isdigit() and int(tail) > 1 else None
