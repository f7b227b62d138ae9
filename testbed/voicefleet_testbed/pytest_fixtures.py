"""pytest fixtures for tests against the testbed: a session-scoped stack, a fresh namespace
per test, and ready clients. Loaded from tests/conftest.py.

By default a test run starts its own stack on free ports and stops it at the end. With
VOICEFLEET_TESTBED=<dir> (e.g. after `make up`, `. .testbed/env`) it reuses that stack.

`keda` adds KEDA to the session's stack (autoscaling mode keda's tests).

`multinode_stack` is a second stack, started only when a test asks for it: Redis and
MULTINODE_NODES LiveKit nodes (multi-node LiveKit), with its own directory, ports and pod
network, no real node. VOICEFLEET_TESTBED_MULTINODE=<dir> reuses one started with
`testbed --dir <dir> up --no-operator --no-real-node --livekit-nodes 2`.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from .binaries import BUILD_SCRIPT
from .keda import Keda, KedaBinaries
from .kube import Kube
from .realnode import REAL_NODE_ANNOTATIONS, RealNode
from .stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reuse = os.environ.get("VOICEFLEET_TESTBED")
    if reuse:
        s = Stack(Path(reuse))
        running = s.running()
        if running and all(running.values()):
            yield s
            return
    s = Stack(tmp_path_factory.mktemp("testbed"), progress=lambda m: print(f"[testbed] {m}"))
    s.up()
    try:
        yield s
    finally:
        s.down()


@pytest.fixture(scope="session")
def kube(stack: Stack) -> Kube:
    return Kube.admin(stack)


MULTINODE_NODES = 2


@pytest.fixture(scope="session")
def multinode_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own with Redis and two LiveKit nodes (`livekit_urls`, node 1 first;
    `room_nodes()`, `livekit_node_id(n)`, `redis_client()`), for the tests marked
    `multinode`; stopped at the end of the session. Its own cluster too (`multinode_kube`),
    so workers can run against it."""
    reuse = os.environ.get("VOICEFLEET_TESTBED_MULTINODE")
    if reuse:
        s = Stack(Path(reuse))
        running = s.running()
        if running and all(running.values()) and s.state.livekit_nodes >= MULTINODE_NODES:
            yield s
            return
    s = Stack(
        tmp_path_factory.mktemp("testbed-multinode"),
        progress=lambda m: print(f"[testbed multinode] {m}"),
    )
    s.up(livekit_nodes=MULTINODE_NODES)
    try:
        yield s
    finally:
        s.down()


@pytest.fixture(scope="session")
def multinode_kube(multinode_stack: Stack) -> Kube:
    return Kube.admin(multinode_stack)


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards (without waiting)."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    kube.core.delete_namespace(name)


@pytest.fixture
def real_node(stack: Stack) -> RealNode:
    """The stack's real node (kubelet, containerd, kube-proxy, CoreDNS), started the first
    time a test asks for it and kept for the session (a test that stops it gets a new one).
    Its `name` is the Node's name; `import_image(oci_archive)` loads an image into it."""
    return stack.add_real_node()


@pytest.fixture(scope="session")
def keda(stack: Stack) -> Keda:
    """KEDA (operator and external metrics API server) beside the session's stack, started
    the first time a test asks for it and kept for the session; its binaries are built
    the first time too (`binaries.sh keda`, not part of `make binaries`: ~18 min cold).
    Returns once the API server serves `external.metrics.k8s.io` through it."""
    if KedaBinaries.locate().missing():
        print(f"[testbed] building KEDA: bash {BUILD_SCRIPT} keda")
        subprocess.run(["bash", str(BUILD_SCRIPT), "keda"], check=True)
    return stack.add_keda()


@pytest.fixture
def real_namespace(
    kube: Kube, real_node: RealNode, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace whose pods go to the real node (not the node agent's)."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    meta = client.V1ObjectMeta(name=name, annotations=dict(REAL_NODE_ANNOTATIONS))
    kube.core.create_namespace(client.V1Namespace(metadata=meta))
    yield name
    kube.core.delete_namespace(name)
