"""The worker process against the testbed's real LiveKit server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voicefleet_contract import Env
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

from .proc import WorkerProc, worker_proc
from .util import agent_config

pytestmark = [pytest.mark.livekit, pytest.mark.slow]


def livekit_env(stack: Stack) -> dict[str, str]:
    return {
        Env.LIVEKIT_URL: stack.livekit_url,
        Env.LIVEKIT_API_KEY: LIVEKIT_KEY,
        Env.LIVEKIT_API_SECRET: stack.livekit_secret,
    }


@pytest.fixture
def worker(stack: Stack, tmp_path: Path) -> Iterator[WorkerProc]:
    cfg = agent_config(livekitURL=stack.livekit_url, agentName="it-agent")
    w = worker_proc(tmp_path / "w", cfg, livekit_env(stack))
    try:
        yield w
    finally:
        w.kill()


def test_registers_serves_and_exits_cleanly_on_sigterm(worker: WorkerProc, stack: Stack) -> None:
    worker.start().wait_registered()
    assert worker.health() == 200
    report = worker.sessions()
    assert (report.activeSessions, report.capacity, report.draining) == (0, 2, False)
    assert worker.metric("voicefleet_worker_capacity_sessions") == 2
    log = worker.log.read_text()
    assert "registered worker" in log
    assert stack.livekit_secret not in log  # secrets never reach the logs

    # memory stays modest: one interpreter, job threads, no local inference models
    assert worker.proc is not None
    status = Path(f"/proc/{worker.proc.pid}/status").read_text()
    rss_mb = int(status.split("VmRSS:")[1].split()[0]) / 1024
    print(f"\nidle worker RSS {rss_mb:.0f} MB")
    assert rss_mb < 300

    worker.terminate()
    assert worker.wait(timeout=30) == 0
    assert "drained: no sessions left" in worker.log.read_text()
