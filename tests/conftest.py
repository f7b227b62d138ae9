"""Fixtures for every test directory: the testbed's (stack, kube, namespace) and the
operator process. The operator is session-scoped and defined here, once, so the operator's
cluster tests and the end-to-end tests share one operator (two would fight over the same
VoiceAgents)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

from .operator.cluster import OperatorProcess, install_crd, install_images, install_rbac

pytest_plugins = ["voicefleet_testbed.pytest_fixtures"]


@pytest.fixture(scope="session")
def operator(
    stack: Stack, kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    if stack.running().get("voicefleet-operator"):
        pytest.exit(
            "the reused testbed runs its own operator (make up); these tests run theirs: "
            "restart it with `testbed up --no-operator`, or run them without VOICEFLEET_TESTBED",
            returncode=2,
        )
    install_crd(kube)
    install_images(stack)
    op = OperatorProcess(stack, install_rbac(kube), tmp_path_factory.mktemp("operator"))
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print(f"operator log tail:\n{op.tail()}")
