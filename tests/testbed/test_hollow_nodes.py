"""hollow_nodes.py: node 1 keeps the names every stack had; node n's names are its own and
read back to n; nothing else reads as a hollow node."""

from __future__ import annotations

import fnmatch

import pytest

from voicefleet_testbed import hollow_nodes as hollow


@pytest.mark.parametrize(
    ("n", "part", "node", "pods", "targets"),
    [
        (1, "node-agent", "testbed-node", "pods", "prometheus-pod-targets.json"),
        (2, "node-agent-2", "testbed-node-2", "pods-2", "prometheus-pod-targets-2.json"),
    ],
)
def test_names(n: int, part: str, node: str, pods: str, targets: str) -> None:
    assert (hollow.part(n), hollow.node_name(n), hollow.pods_subdir(n)) == (part, node, pods)
    assert hollow.targets_file(n) == targets
    assert fnmatch.fnmatch(targets, hollow.TARGETS_GLOB)  # Prometheus reads every node's
    assert hollow.number(node) == n


@pytest.mark.parametrize(
    "other", ["testbed-real-node", "testbed-node-1", "testbed-node-x", "testbed-node-", "node-2"]
)
def test_other_nodes_are_not_hollow(other: str) -> None:
    assert hollow.number(other) is None
