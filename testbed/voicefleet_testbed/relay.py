"""A TCP relay in front of several LiveKit nodes: the testbed's stand-in for the load
balancer (a Service over the nodes) that a multi-node LiveKit needs in front of it.

livekit-agents and the client SDKs know one URL and retry it when the connection drops. With
a node's own URL a worker (or caller) registered with a node that died retries a dead
address for good; with a load-balanced URL its retry reaches a node that lives. On the
testbed the workers are host processes with no kube-proxy in front of them, so a
selector-less Service would give them a ClusterIP nothing routes: this relay is that
Service's job done in the test process, on 127.0.0.1 only.

Each new connection goes to the next backend in turn (round robin); a backend that refuses
is skipped for that connection (as a load balancer's failed health check would), so once a
node is dead every new connection reaches a live one. Bytes are copied both ways untouched
(WebSocket signalling and HTTP API calls); media never passes here (it goes over UDP to the
node named in the join response).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

CHUNK = 65536


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"{url!r}: a URL with host and port")
    return parts.hostname, parts.port


class TcpRelay:
    """`TcpRelay(["ws://127.0.0.1:7880", ...]).start()`; `url` is the balanced URL.
    Runs its own event loop in a thread. Tests run it as a process (`RelayProcess`): in
    the test's own process, 20 callers' audio starve it of the GIL and signalling stalls."""

    def __init__(
        self, backends: Sequence[str], host: str = "127.0.0.1", log: TextIO | None = None
    ) -> None:
        if not backends:
            raise ValueError("a relay needs at least one backend")
        if not host.startswith("127."):
            raise ValueError("the relay listens on loopback only")
        self.backends = [host_port(b) for b in backends]
        self.host = host
        self.port = 0
        self.connections: Counter[int] = Counter()  # backend index -> connections made
        self.refused: Counter[int] = Counter()  # backend index -> connects refused
        self._next = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._log = log

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> TcpRelay:
        self._thread.start()
        fut: Future[asyncio.Server] = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, self.host, 0), self._loop
        )
        self._server = fut.result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._open):
                w.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def wait(self) -> None:
        """Until stopped (the process's main thread)."""
        self._thread.join()

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _order(self) -> list[int]:
        with self._lock:
            first = self._next
            self._next = (self._next + 1) % len(self.backends)
        n = len(self.backends)
        return [(first + i) % n for i in range(n)]

    def _note(self, what: str, backend: int) -> None:
        if self._log is not None:
            self._log.write(f"{what} {backend + 1}\n")  # node numbers are 1-based
            self._log.flush()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            for i in self._order():
                host, port = self.backends[i]
                try:
                    up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
                except (OSError, TimeoutError):
                    with self._lock:
                        self.refused[i] += 1
                    self._note("refused", i)
                    continue
                with self._lock:
                    self.connections[i] += 1
                self._note("connected", i)
                self._open.add(up_w)
                try:
                    # Either side ending ends the whole connection (WebSocket and HTTP
                    # clients never half-close), as a balancer does when a backend dies.
                    pipes = [
                        asyncio.ensure_future(self._pipe(reader, up_w)),
                        asyncio.ensure_future(self._pipe(up_r, writer)),
                    ]
                    await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                    for p in pipes:
                        p.cancel()
                    await asyncio.gather(*pipes, return_exceptions=True)
                finally:
                    self._open.discard(up_w)
                    up_w.close()
                return
        finally:
            self._open.discard(writer)
            writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy until EOF or an error (a reset from a node that died)."""
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(CHUNK):
                dst.write(data)
                await dst.drain()


class RelayProcess:
    """The relay as a process of its own (`python -m voicefleet_testbed.relay`); `url` is
    the balanced URL, `counts()` the connections each node (1-based) got or refused."""

    def __init__(self, backends: Sequence[str], log: Path) -> None:
        self.backends = list(backends)
        self.log = log
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> RelayProcess:
        self.log.write_text("")
        argv = [sys.executable, "-m", "voicefleet_testbed.relay", "--log", str(self.log)]
        self.proc = subprocess.Popen([*argv, *self.backends], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the relay says its URL once it listens
        if not line.startswith("ws://"):
            self.stop()
            raise RuntimeError(f"the relay did not start: {line!r}")
        self.url = line
        return self

    def counts(self) -> dict[str, Counter[int]]:
        out: dict[str, Counter[int]] = {"connected": Counter(), "refused": Counter()}
        for line in self.log.read_text().splitlines():
            what, _, node = line.partition(" ")
            if what in out and node.isdigit():
                out[what][int(node)] += 1
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A round-robin TCP relay over LiveKit nodes.")
    ap.add_argument("backends", nargs="+", help="ws://host:port of each node")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--log", type=Path, help="append a line per connection here")
    args = ap.parse_args(argv)
    log = args.log.open("a") if args.log else None
    relay = TcpRelay(args.backends, args.host, log).start()
    print(relay.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        relay.wait()


if __name__ == "__main__":
    main()
