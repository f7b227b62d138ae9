"""A tiny stand-in for a voicefleet worker pod, for scale tests and benchmarks.

A real worker costs a few hundred MB (livekit-agents keeps job processes warm), so tests
that need dozens or thousands of worker pods map the worker image to this module through
the node agent's image table. It serves what the operator reads from a worker, with the
contract's names and ports: livekit-agents' health endpoint (`GET /` on the health port)
and `/metrics` + `/sessions` on the metrics port. Its session count is set from outside
(`POST /control {"activeSessions": n}`); SIGTERM starts a drain that ends when the count
reaches zero or the drain timeout passes, like the real worker. `/sessions` long-polls as
the contract says (`?since=<version>&wait=<seconds>`). Standard library only (and the
contract).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from voicefleet_contract import HEALTH_PORT, METRICS_PORT, READY_PATH, Env
from voicefleet_contract.capacity import DEFAULT_MAX_PER_WORKER
from voicefleet_contract.metrics import WORKER_ACTIVE_SESSIONS, WORKER_CAPACITY, WORKER_DRAINING
from voicefleet_contract.sessions import (
    SESSIONS_PATH,
    ChangeNotifier,
    LongPoll,
    parse_long_poll,
    with_version,
)


class FakeWorker:
    def __init__(self, capacity: int, drain_timeout: float) -> None:
        self.capacity = capacity
        self.drain_timeout = drain_timeout
        self.active = 0
        self.draining = False
        self.hang = False  # for tests: /metrics and /sessions stop answering (not /ready)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified on every change (threads)
        self.notifier = ChangeNotifier()  # the same, for asyncio waiters (the in-process one)

    def metrics(self) -> str:
        with self.lock:
            rows = [
                (WORKER_ACTIVE_SESSIONS, self.active),
                (WORKER_CAPACITY, self.capacity),
                (WORKER_DRAINING, int(self.draining)),
            ]
        out = []
        for spec, value in rows:
            out += [
                f"# HELP {spec.name} {spec.help}",
                f"# TYPE {spec.name} {spec.kind}",
                f"{spec.name} {value}",
            ]
        return "\n".join(out) + "\n"

    def sessions(self) -> dict[str, Any]:
        """The `/sessions` body, with its version."""
        with self.lock:
            return self._sessions()

    def _sessions(self) -> dict[str, Any]:  # self.lock held
        rooms = [
            {"room": f"fake-{i}", "jobId": f"fake-{i}", "startedAt": 0} for i in range(self.active)
        ]
        return with_version(
            {
                "activeSessions": self.active,
                "capacity": self.capacity,
                "draining": self.draining,
                "rooms": rooms,
            }
        )

    def long_poll(self, poll: LongPoll) -> dict[str, Any]:
        """The `/sessions` body once its version differs from `poll.since`, or after
        `poll.wait` seconds (blocks the calling thread)."""
        with self.changed:
            if poll.since is not None:
                self.changed.wait_for(lambda: self._sessions()["version"] != poll.since, poll.wait)
            return self._sessions()

    def _notify(self) -> None:  # self.lock held
        self.changed.notify_all()
        self.notifier.notify()

    def control(self, body: dict[str, Any]) -> None:
        with self.changed:
            if "activeSessions" in body:
                self.active = max(0, int(body["activeSessions"]))
            if "hang" in body:
                self.hang = bool(body["hang"])
            self._notify()

    def set_draining(self) -> None:
        with self.changed:
            self.draining = True
            self._notify()

    def drain(self) -> None:
        """SIGTERM: stop taking sessions; exit once the last ends or the timeout passes."""
        with self.changed:
            self.draining = True
            self._notify()
            deadline = time.monotonic() + self.drain_timeout
            while self.active > 0 and time.monotonic() < deadline:
                self.changed.wait(timeout=max(0.0, deadline - time.monotonic()))
        os._exit(0)


def _handler(worker: FakeWorker, kind: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: probes every second
            pass

        def _send(self, code: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if kind == "health":
                self._send(200, "OK")  # a full or draining worker stays Ready
                return
            if self.path.startswith(READY_PATH):
                self._send(200, "registered")  # the fake is always "registered"
                return
            self._hang()
            if self.path.startswith("/metrics"):
                self._send(200, worker.metrics(), "text/plain; version=0.0.4")
            elif self.path.startswith(SESSIONS_PATH):
                query = parse_qs(urlsplit(self.path).query)
                try:
                    poll = parse_long_poll({k: v[-1] for k, v in query.items()})
                except ValueError as e:
                    self._send(400, f"{e}\n")
                    return
                body = worker.long_poll(poll)
                self._hang()  # hung while this request waited: it gets no answer either
                self._send(200, json.dumps(body), "application/json")
            else:
                self._send(404, "not found")

        def _hang(self) -> None:
            if worker.hang:
                # What the operator sees when it cannot reach the pod while the kubelet's
                # local readiness probe still can (a network policy, a partition).
                time.sleep(3600)

        def do_POST(self) -> None:
            if kind == "metrics" and self.path.startswith("/control"):
                length = int(self.headers.get("Content-Length", "0"))
                worker.control(json.loads(self.rfile.read(length) or b"{}"))
                self._send(200, json.dumps(worker.sessions()), "application/json")
            else:
                self._send(404, "not found")

    return Handler


def capacity_from_config(env: Mapping[str, str] = os.environ) -> tuple[int, float]:
    """(maxPerWorker, drainTimeoutSeconds) from the mounted agent config, else FAKE_* env."""
    path = env.get(Env.CONFIG_FILE)
    if path and os.path.exists(path):
        with open(path) as f:
            sessions = json.load(f).get("sessions", {})
        return int(sessions.get("maxPerWorker", DEFAULT_MAX_PER_WORKER)), float(
            sessions.get("drainTimeoutSeconds", 3600)
        )
    return int(env.get("FAKE_CAPACITY", "10")), float(env.get("FAKE_DRAIN_TIMEOUT", "3600"))


def main() -> None:
    host = os.environ.get(Env.POD_IP, "127.0.0.1")
    capacity, drain_timeout = capacity_from_config()
    worker = FakeWorker(capacity, drain_timeout)
    worker.active = int(os.environ.get("FAKE_ACTIVE_SESSIONS", "0"))
    servers = [
        ThreadingHTTPServer(
            (host, int(os.environ.get(Env.HEALTH_PORT, HEALTH_PORT))), _handler(worker, "health")
        ),
        ThreadingHTTPServer(
            (host, int(os.environ.get(Env.METRICS_PORT, METRICS_PORT))), _handler(worker, "metrics")
        ),
    ]
    for srv in servers:
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=worker.drain, daemon=True).start()
    )
    print(f"fake worker on {host}: capacity {capacity}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
