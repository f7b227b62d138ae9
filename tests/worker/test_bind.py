"""Where the worker's two servers listen, seen from inside a network namespace of its own
(as a pod's): every address by default, only the one named by VOICEFLEET_BIND_ADDRESS
when it is set. The namespace has nothing but its loopback, so a server bound to
0.0.0.0 there is reachable from nowhere else (the rule of this machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voicefleet_contract import Env

from .util import agent_config, worker_env, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
        reason="needs root, unshare and ip for a network namespace",
    ),
]

# Runs inside the namespace: starts the worker, waits for its metrics port on the
# address it must answer on, then probes both ports on two loopback addresses.
PROBE = r"""
import json, os, subprocess, sys, time, urllib.request
env = json.loads(sys.argv[1])
proc = subprocess.Popen([sys.executable, "-m", "voicefleet_worker"], env=env,
                        stdout=subprocess.DEVNULL, stderr=open(sys.argv[2], "ab"))
def status(host, port):
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics" if port == 9464
                                    else f"http://{host}:{port}/", timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None
try:
    deadline = time.monotonic() + 60
    while status("127.0.0.1", 9464) is None or status("127.0.0.1", 8081) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            print(json.dumps({"error": f"worker did not listen (exit {proc.poll()})"}))
            sys.exit(0)
        time.sleep(0.2)
    print(json.dumps({h: [status(h, 9464), status(h, 8081)] for h in ("127.0.0.1", "127.7.7.7")}))
finally:
    proc.kill()
    proc.wait()
"""


def _probe(tmp_path: Path, **env_over: str) -> dict[str, list[int | None]]:
    env = {
        **worker_env(write_config(tmp_path, agent_config()), **env_over),
        # Nothing listens in the namespace: the worker keeps retrying LiveKit meanwhile.
        Env.LIVEKIT_URL: "ws://127.0.0.1:9",
        Env.METRICS_PORT: "9464",
        Env.HEALTH_PORT: "8081",
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
    }
    log = tmp_path / "worker.log"
    res = subprocess.run(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1" "$2" "$3"',
         sys.executable, PROBE, json.dumps(env), str(log)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out: dict[str, list[int | None]] = json.loads(res.stdout.strip().splitlines()[-1])
    assert "error" not in out, f"{out}\n{log.read_text(errors='replace')[-3000:]}"
    return out


def test_listens_on_every_address_by_default(tmp_path: Path) -> None:
    got = _probe(tmp_path, **{Env.POD_IP: "127.0.0.1"})
    # /metrics is 200; livekit-agents' health answers (200 or 503) on both addresses.
    assert got["127.0.0.1"][0] == 200 and got["127.7.7.7"][0] == 200
    assert got["127.0.0.1"][1] is not None and got["127.7.7.7"][1] is not None


def test_bind_address_limits_both_servers(tmp_path: Path) -> None:
    got = _probe(tmp_path, **{Env.BIND_ADDRESS: "127.0.0.1"})
    assert got["127.0.0.1"][0] == 200 and got["127.0.0.1"][1] is not None
    assert got["127.7.7.7"] == [None, None]  # refused: not bound there
