"""A tiny stand-in worker for cluster tests: what the operator's pod template promises.

It loads agent.json through the contract's loader (a bad render fails the pod), checks
the secret env vars are there, and serves the health server (GET / -> 200) and /metrics on
the pod IP. SIGTERM exits at once. Run by the node agent via the image table.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from voicefleet_contract import SECRET_ENV, Env
from voicefleet_contract.config import parse_config


def main() -> None:
    with open(os.environ[Env.CONFIG_FILE]) as f:
        config = parse_config(json.load(f))
    missing = [n for n in SECRET_ENV if not os.environ.get(n)]
    if missing:
        sys.exit(f"missing secret env {missing}")
    ip = os.environ[Env.POD_IP]
    body = (
        "voicefleet_worker_active_sessions 0\n"
        f"voicefleet_worker_capacity_sessions {config.sessions.maxPerWorker}\n"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            out = body if self.path.startswith("/metrics") else b"OK"
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: object) -> None:
            pass

    servers = [
        ThreadingHTTPServer((ip, int(os.environ[Env.HEALTH_PORT])), Handler),
        ThreadingHTTPServer((ip, int(os.environ[Env.METRICS_PORT])), Handler),
    ]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"fake agent {config.agentName} on {ip}", flush=True)
    stop.wait()


if __name__ == "__main__":
    main()
