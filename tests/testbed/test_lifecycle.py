"""`testbed up/status/down` on a stack of its own: idempotent up, a crashed part is reported,
a stale state directory is recovered, and down leaves no process behind."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import pytest

from voicefleet_testbed.cli import main as cli
from voicefleet_testbed.procs import wait_for
from voicefleet_testbed.stack import Stack

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow]


def processes_under(directory: Path) -> list[int]:
    """PIDs of live processes whose command line names `directory` (our stack's parts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if str(directory) in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(int(entry.name))
    return found


def test_up_twice_status_crash_recover_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "tb"
    try:
        assert cli(["--dir", str(d), "up"]) == 0
        stack = Stack(d)
        pids = {n: r.pid for n, r in stack.state.procs.items()}
        assert set(pids) >= {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "node-agent",
            "livekit-server",
            "realtime-standin",
        }
        env = (d / "env").read_text()
        for var in (
            "KUBECONFIG",
            "LIVEKIT_URL",
            "LIVEKIT_API_KEY",
            "LIVEKIT_API_SECRET",
            "OPENAI_BASE_URL",
        ):
            assert f"export {var}=" in env
        with urllib.request.urlopen(stack.livekit_url.replace("ws://", "http://"), timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{stack.realtime_url}/healthz", timeout=5) as r:
            assert r.status == 200

        # A second up is harmless: same processes.
        assert cli(["--dir", str(d), "up"]) == 0
        assert "already up" in capsys.readouterr().out
        assert {n: r.pid for n, r in Stack(d).state.procs.items()} == pids

        # A crashed part is reported, not ignored.
        os.kill(pids["livekit-server"], signal.SIGKILL)
        wait_for(lambda: not Stack(d).running()["livekit-server"], 10, "livekit-server to die")
        capsys.readouterr()
        assert cli(["--dir", str(d), "status"]) == 1
        assert "DOWN livekit-server" in capsys.readouterr().out

        # up recovers the stale stack.
        assert cli(["--dir", str(d), "up"]) == 0
        assert "recovering a stale testbed" in capsys.readouterr().out
        assert all(Stack(d).running().values())
        assert cli(["--dir", str(d), "status"]) == 0
    finally:
        cli(["--dir", str(d), "down"])
    assert not any(Stack(d).running().values())
    assert processes_under(d) == []
