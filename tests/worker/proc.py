"""A voicefleet worker run as a plain process (as the node agent would run a pod), for
integration and end-to-end tests: its own loopback address, HOME, TMPDIR and log file."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from voicefleet_contract import Env
from voicefleet_contract.sessions import SessionsReport, parse_sessions
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.procs import wait_for

from .util import RESUME_KEY


def pod_ip() -> str:
    return f"127.{random.randint(200, 250)}.{random.randint(0, 255)}.{random.randint(2, 254)}"


@dataclass
class WorkerProc:
    dir: Path
    config: dict[str, Any]
    env: dict[str, str]
    args: list[str] = field(default_factory=lambda: ["-m", "voicefleet_worker"])
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ip(self) -> str:
        return self.env[Env.POD_IP]

    @property
    def metrics_url(self) -> str:
        return f"http://{self.ip}:{self.env[Env.METRICS_PORT]}"

    @property
    def health_url(self) -> str:
        return f"http://{self.ip}:{self.env[Env.HEALTH_PORT]}/"

    @property
    def log(self) -> Path:
        return self.dir / "worker.log"

    def start(self) -> WorkerProc:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "home").mkdir(exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        cfg = self.dir / "agent.json"
        cfg.write_text(json.dumps(self.config))
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LIVEKIT_", "OPENAI_", "VOICEFLEET_", "OTEL_"))
        }
        env = {
            **base,
            "HOME": str(self.dir / "home"),
            "TMPDIR": str(self.dir / "tmp"),
            "PYTHONUNBUFFERED": "1",
            Env.CONFIG_FILE: str(cfg),
            **self.env,
        }
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                env=env,
                cwd=self.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _get(self, url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def health(self) -> int:
        return self._get(self.health_url)[0]

    def worker_info(self) -> dict[str, Any]:
        """livekit-agents' own `GET /worker` (load, active jobs) on the health port."""
        info: dict[str, Any] = json.loads(self._get(self.health_url + "worker")[1])
        return info

    def metrics(self) -> dict[str, float]:
        """Every sample as `name{label="v",...}` -> value (labels sorted)."""
        _, text = self._get(self.metrics_url + "/metrics")
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def metric(self, name: str, default: float = 0.0) -> float:
        try:
            return self.metrics().get(name, default)
        except OSError:
            return default

    def sessions(self) -> SessionsReport:
        _, text = self._get(self.metrics_url + "/sessions")
        return parse_sessions(json.loads(text))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_registered(self, timeout: float = 60) -> None:
        def check() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited:\n{self.tail()}")
            return self.metric("voicefleet_worker_registered") == 1.0

        wait_for(check, timeout, "worker registered with LiveKit", on_fail=self.tail)

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def worker_proc(
    directory: Path, config: dict[str, Any], livekit: dict[str, str], **env: str
) -> WorkerProc:
    ip = pod_ip()
    full = {
        Env.POD_IP: ip,
        # A process on the host's network, as the node agent runs a pod: its own address.
        Env.BIND_ADDRESS: ip,
        Env.METRICS_PORT: str(free_port(ip)),
        Env.HEALTH_PORT: str(free_port(ip)),
        Env.LOG_FORMAT: "json",
        Env.OPENAI_API_KEY: "sk-test-not-a-real-key",
        Env.RESUME_KEY: RESUME_KEY,  # the operator's worker-keys Secret provides it
        **livekit,
        **env,
    }
    return WorkerProc(dir=directory, config=config, env=full)
