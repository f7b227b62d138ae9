"""One registry per pod with jobs in processes: each job process sends its session changes
and metric updates to the worker process over a unix socket, which applies them to the
real `SessionRegistry` and `WorkerMetrics` (so `/sessions`, `/metrics`, the reported load
and drain stay what they are with threads).

Why forwarding and not prometheus_client's multiprocess mode: its directory gains a set
of files with every job process (livekit-agents runs one job per process) and is only
pruned for gauges; the worker-process metrics (sessions, registration, lk_agents_*) would
need a second, merged collection; and `/sessions` needs the parent to know each job's room
anyway. One JSON line per change is tiny next to a call's audio.

The wire format is one JSON object per line:
  {"k": "start", "job": id, "room": name, "participant": identity}
  {"k": "joined", "job": id}
  {"k": "end", "job": id, "outcome": outcome}
  {"k": "m", "name": metric, "labels": {...}, "op": "inc"|"dec"|"set"|"observe"|"clear",
   "value": number}
A job process that dies without sending `end` (a crash, an OOM kill) ends its open
sessions with outcome `error` when its connection closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Mapping
from contextlib import suppress
from typing import Any, Final

from prometheus_client import CollectorRegistry

from voicefleet_contract.metrics import WORKER_METRICS, MetricSpec

from .metrics import WorkerMetrics
from .sessions import SessionRegistry

log = logging.getLogger("voicefleet.worker")

SOCKET_NAME: Final = "jobs.sock"
MAX_LINE: Final = 64 * 1024
OPS: Final[Mapping[str, frozenset[str]]] = {
    "counter": frozenset({"inc"}),
    "gauge": frozenset({"inc", "dec", "set", "clear"}),
    "histogram": frozenset({"observe"}),
}
SPECS: Final[Mapping[str, MetricSpec]] = {s.name: s for s in WORKER_METRICS}


class LinkError(ValueError):
    """A message the worker process does not apply (named in the log, never fatal)."""


def encode(msg: Mapping[str, Any]) -> bytes:
    return (json.dumps(msg, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except ValueError as e:
        raise LinkError(f"not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise LinkError("not a JSON object")
    return msg


def _str(msg: Mapping[str, Any], key: str) -> str:
    v = msg.get(key)
    if not isinstance(v, str) or not v:
        raise LinkError(f"{key}: must be a non-empty string")
    return v


def check_metric(msg: Mapping[str, Any]) -> tuple[MetricSpec, dict[str, str], str, float]:
    """A metric message's spec, labels, op and value, or LinkError naming what is wrong."""
    name = _str(msg, "name")
    spec = SPECS.get(name)
    if spec is None:
        raise LinkError(f"name: {name!r} is not a worker metric")
    op = _str(msg, "op")
    if op not in OPS[spec.kind]:
        raise LinkError(f"op: {op!r} is not allowed on {spec.kind} {name}")
    labels = msg.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise LinkError("labels: must map label names to strings")
    if op != "clear" and set(labels) != set(spec.labels):
        raise LinkError(f"labels: {name} takes {sorted(spec.labels)}, got {sorted(labels)}")
    value = msg.get("value", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LinkError("value: must be a finite number")
    if op == "inc" and spec.kind == "counter" and value < 0:
        raise LinkError("value: a counter only goes up")
    return spec, labels, op, float(value)


def apply(
    msg: Mapping[str, Any], sessions: SessionRegistry, metrics: WorkerMetrics, open_jobs: set[str]
) -> None:
    """Apply one message from a job process; `open_jobs` tracks that process's sessions."""
    kind = msg.get("k")
    if kind == "m":
        spec, labels, op, value = check_metric(msg)
        metric = metrics.by_name[spec.name]
        if op == "clear":
            metric.clear()
            return
        target = metric.labels(**labels) if spec.labels else metric
        getattr(target, op)(value)
    elif kind == "start":
        job = _str(msg, "job")
        participant = msg.get("participant", "")
        sessions.start(job, _str(msg, "room"), participant if isinstance(participant, str) else "")
        open_jobs.add(job)
    elif kind == "joined":
        sessions.joined(_str(msg, "job"))
    elif kind == "end":
        job = _str(msg, "job")
        sessions.end(job, _str(msg, "outcome"))
        open_jobs.discard(job)
    else:
        raise LinkError(f"k: unknown message kind {kind!r}")


class JobLinkServer:
    """The worker process's end: a unix socket in a private (0700) directory."""

    def __init__(self, sessions: SessionRegistry, metrics: WorkerMetrics) -> None:
        self.sessions, self.metrics = sessions, metrics
        self._dir = tempfile.mkdtemp(prefix="voicefleet-jobs-")
        self.path = os.path.join(self._dir, SOCKET_NAME)
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_LINE)
        return self.path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_jobs: set[str] = set()
        try:
            while line := await reader.readline():
                try:
                    apply(decode(line), self.sessions, self.metrics, open_jobs)
                except LinkError as e:
                    log.warning("job process message ignored: %s", e)
        except (ValueError, ConnectionError) as e:  # a line over MAX_LINE, a reset
            log.warning("job process link closed: %s", type(e).__name__)
        finally:
            for job in open_jobs:  # the process went away mid-session
                self.sessions.end(job, "error")
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with suppress(Exception):
                await self._server.wait_closed()
        shutil.rmtree(self._dir, ignore_errors=True)


class ParentLink:
    """A job process's end: one connection, opened on first use. Sends are blocking but
    tiny (the worker process reads them at once); a lost link drops messages, with one
    warning, rather than failing the call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._broken = False

    def send(self, msg: Mapping[str, Any]) -> None:
        data = encode(msg)
        with self._lock:
            if self._broken:
                return
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self._sock.connect(self.path)
                self._sock.sendall(data)
            except OSError as e:
                self._broken = True
                log.warning("link to the worker process lost: metrics of this job are dropped",
                            extra={"error": type(e).__name__})  # fmt: skip

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                with suppress(OSError):
                    self._sock.close()
                self._sock = None


class RemoteMetric:
    """A worker metric in a job process: each change goes to the worker process."""

    def __init__(self, link: ParentLink, name: str, labels: Mapping[str, str] | None = None):
        self.link, self.name, self._labels = link, name, dict(labels or {})

    def labels(self, *values: Any, **labels: Any) -> RemoteMetric:
        if values:
            names = SPECS[self.name].labels
            labels = {**dict(zip(names, values, strict=True)), **labels}
        return RemoteMetric(self.link, self.name, {k: str(v) for k, v in labels.items()})

    def _send(self, op: str, value: float = 1.0) -> None:
        self.link.send(
            {"k": "m", "name": self.name, "labels": self._labels, "op": op, "value": value}
        )

    def inc(self, amount: float = 1) -> None:
        self._send("inc", amount)

    def dec(self, amount: float = 1) -> None:
        self._send("dec", amount)

    def set(self, value: float) -> None:
        self._send("set", value)

    def observe(self, amount: float) -> None:
        self._send("observe", amount)

    def clear(self) -> None:
        self._send("clear")


def remote_metrics(link: ParentLink) -> WorkerMetrics:
    """`WorkerMetrics` for a job process (its own registry holds nothing)."""

    def build(s: MetricSpec, _: CollectorRegistry) -> RemoteMetric:
        return RemoteMetric(link, s.name)

    return WorkerMetrics(CollectorRegistry(), build=build, passthrough=False)


class RemoteSessions:
    """The `SessionSink` of a job process: the worker process keeps the registry."""

    def __init__(self, link: ParentLink) -> None:
        self.link = link

    def start(self, job_id: str, room: str, participant: str = "") -> None:
        self.link.send({"k": "start", "job": job_id, "room": room, "participant": participant})

    def joined(self, job_id: str) -> None:
        self.link.send({"k": "joined", "job": job_id})

    def end(self, job_id: str, outcome: str) -> None:
        self.link.send({"k": "end", "job": job_id, "outcome": outcome})
