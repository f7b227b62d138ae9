"""What the benchmarks with real workers and live calls start: a testbed and the operator.

A stack of its own in a temporary directory (or the one in VOICEFLEET_TESTBED, started with
`testbed up --no-operator`), the CRD, and the operator of this checkout as a process under
its own ServiceAccount, webhooks on, with its production timers (resync, retry and the
failover sweep at their defaults: what a user runs, not the tests' short ones). Stopped
afterwards (the stack only if this started it). The result file records
`operator_flags(op.argv)` (bench.common).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.operator.cluster import (
    OperatorProcess,
    install_crd,
    install_images,
    install_rbac,
    production_timers,
)
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack


@contextlib.contextmanager
def live_testbed(name: str) -> Iterator[tuple[Stack, Kube, OperatorProcess]]:
    reuse = os.environ.get("VOICEFLEET_TESTBED")
    tmp = None
    if reuse:
        stack = Stack(Path(reuse))
    else:
        tmp = tempfile.TemporaryDirectory(prefix=f"vf-bench-{name}-")
        stack = Stack(Path(tmp.name), progress=lambda m: print(f"  [testbed] {m}", flush=True))
        stack.up()
    op: OperatorProcess | None = None
    try:
        kube = Kube.admin(stack)
        install_crd(kube)
        install_images(stack)
        workdir = Path(tmp.name if tmp else tempfile.mkdtemp(prefix="vf-bench-op-"))
        extra = os.environ.get("BENCH_OPERATOR_ARGS", "").split()
        op = OperatorProcess(stack, install_rbac(kube), workdir, [*production_timers(), *extra])
        op.start()
        yield stack, kube, op
    finally:
        if op is not None:
            op.stop()
        if tmp is not None:
            stack.down(quiet=True)
            tmp.cleanup()
