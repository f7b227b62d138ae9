"""Fixtures for every test directory: the testbed's (stack, kube, namespace) and the
operator process. The operator is defined here, once, and module-scoped: a test module that
uses it has one cluster-wide operator, and it is gone before the next module starts, so it
never also manages the VoiceAgents of a module that runs its own (the Helm chart's install
tests), which two operators would fight over."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from .operator.cluster import OperatorProcess, running_operator

pytest_plugins = ["voicefleet_testbed.pytest_fixtures"]


@pytest.fixture(scope="module")
def operator(
    stack: Stack, kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    if stack.running().get("voicefleet-operator"):
        pytest.exit(
            "the reused testbed runs its own operator (make up); these tests run theirs: "
            "restart it with `testbed up --no-operator`, or run them without VOICEFLEET_TESTBED",
            returncode=2,
        )
    with running_operator(stack, kube, tmp_path_factory.mktemp("operator")) as op:
        yield op


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests run on request (VOICEFLEET_SOAK=1): the two-node calls test puts 20
    calls, 3 workers and two LiveKit nodes on the machine at once and is not yet reliable
    in a full clean run on 2 cores (docs/operations.md, Multi-node LiveKit)."""
    if os.environ.get("VOICEFLEET_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: run with VOICEFLEET_SOAK=1")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)
