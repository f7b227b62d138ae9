"""What the cluster benchmarks share: a testbed stack with the operator running as a process
(the cluster tests' `OperatorProcess`, under its own RBAC identity), fake-worker pods served
in-process by the node agent, a process's CPU and memory from /proc, and watches that
timestamp what the API server reports.

By default a benchmark starts its own stack in a temporary directory and stops it at the
end; with VOICEFLEET_TESTBED=<dir> it reuses a running one (e.g. after `make up`).
BENCH_OPERATOR_ARGS adds operator flags (e.g. "--api-threads=6" to compare settings).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch
from prometheus_client.parser import text_string_to_metric_families

from tests.operator.cluster import (
    OperatorProcess,
    custom_metrics_available,
    install_crd,
    install_custom_metrics_api,
    install_rbac,
    production_timers,
    secrets,
    wait_for,
)
from voicefleet_contract.metrics import (
    AUTOSCALER_DECISIONS,
    AUTOSCALER_SCRAPE_FAILURES,
    OPERATOR_RECONCILES,
)
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import Stack

JSON = dict[str, Any]
FAKE_IMAGE = "voicefleet.dev/testbed/fake-worker:1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- a process's cost, from /proc ------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) in MB, from VmRSS and VmHWM."""
    now = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


@dataclass
class CpuMeter:
    """CPU seconds a process spends between `start()` and `stop()`, and per wall second."""

    pid: int
    cpu0: float = 0.0
    t0: float = 0.0
    cpu: float = 0.0
    wall: float = 0.0

    def start(self) -> CpuMeter:
        self.cpu0, self.t0 = cpu_seconds(self.pid), time.monotonic()
        return self

    def stop(self) -> CpuMeter:
        self.cpu = cpu_seconds(self.pid) - self.cpu0
        self.wall = time.monotonic() - self.t0
        return self

    @property
    def per_second(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


class LastEvent:
    """When the last watch event arrived, for `wait_quiet`: the stack done with a burst
    (kube-controller-manager's last status writes come a minute after the last Ready at
    1,000)."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def see(self, t: float) -> None:
        with self.lock:
            self.at = max(self.at, t)

    def wait_quiet(self, quiet: float, deadline: float) -> float:
        """Until no event for `quiet` seconds; returns how long that took (NaN: `deadline`
        seconds passed first)."""
        start = time.monotonic()
        while True:
            now = time.monotonic()
            with self.lock:
                since = now - self.at
            if since >= quiet:
                return now - start
            if now - start >= deadline:
                return math.nan
            time.sleep(min(quiet - since, 1.0))  # polling, with the deadline above


def settle(pid: int, window: float = 5.0, deadline: float = 180.0) -> list[float]:
    """Wait until the process's CPU use stops falling: consecutive `window`-second rates
    until one is no longer under 80 % of the one before (or is under 1 % of a core), at
    most `deadline` seconds. What follows a burst (a backlog of watch events still being
    handled) is not idle. Returns the rates seen (cores), for the result file."""
    rates: list[float] = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        meter = CpuMeter(pid).start()
        time.sleep(window)  # pacing: one measurement window
        rates.append(meter.stop().per_second)
        if rates[-1] < 0.01 or (len(rates) > 1 and rates[-1] >= 0.8 * rates[-2]):
            break
    return rates


def machine_load() -> float:
    """1-minute load average: the machine is shared, so every result records it."""
    return float(Path("/proc/loadavg").read_text().split()[0])


# --- watches -----------------------------------------------------------------------------
class Watcher:
    """A watch on one resource in one namespace, calling `on_event(type, object, t)` with the
    monotonic time the event arrived. Raw dicts (no model deserialisation) to stay cheap."""

    def __init__(
        self,
        kube: Kube,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        on_event: Callable[[str, JSON, float], None],
    ) -> None:
        self.args = (group, version, namespace, plural)
        self.custom = kube.custom
        self.core = kube.core
        self.on_event = on_event
        self.watch = watch.Watch()  # type: ignore[no-untyped-call]
        self.started = threading.Event()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        self.started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.closed = True
        self.watch.stop()  # type: ignore[no-untyped-call]  # takes effect at the next event; the thread is a daemon

    def _run(self) -> None:
        while not self.closed:
            try:
                listing: JSON = self._list(*self.args)
                rv = listing["metadata"]["resourceVersion"]
                t = time.monotonic()
                for obj in listing.get("items", []):
                    self.on_event("ADDED", obj, t)
                self.started.set()
                for ev in self.watch.stream(  # type: ignore[no-untyped-call]
                    self._list,
                    *self.args,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                ):
                    if self.closed:
                        return
                    if ev["type"] != "BOOKMARK":
                        self.on_event(ev["type"], ev["raw_object"], time.monotonic())
            except Exception:  # expired or dropped: list again (the bench reads first times)
                time.sleep(0.5)

    def _list(self, group: str, version: str, namespace: str, plural: str, **kw: Any) -> Any:
        """One listing or watch stream, raw (no model objects): a custom resource's, or
        (group "") pods' through the core API."""
        if group:
            return self.custom.list_namespaced_custom_object(
                group, version, namespace, plural, **kw
            )
        if plural != "pods":
            raise ValueError(f"core resources watched here: pods, not {plural}")
        if kw.get("watch"):
            return self.core.list_namespaced_pod(namespace, **kw)
        resp: Any = self.core.list_namespaced_pod(namespace, _preload_content=False, **kw)
        return json.loads(resp.data)


def owner(obj: JSON, kind: str) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return str(ref["name"])
    return None


def condition_true(obj: JSON, type_: str) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conds)


class FirstTimes:
    """name -> first time something was seen; waiters wake when the set is complete."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.cond = threading.Condition()

    def see(self, name: str, t: float) -> None:
        with self.cond:
            if name not in self.times:
                self.times[name] = t
                self.cond.notify_all()

    def wait_all(self, names: Iterable[str], timeout: float) -> bool:
        wanted = set(names)
        with self.cond:
            return self.cond.wait_for(lambda: wanted <= self.times.keys(), timeout)


def parallel(fn: Callable[[Any], Any], items: Sequence[Any], threads: int = 8) -> None:
    """Run fn over items with a few threads (the API client is synchronous)."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(fn, i) for i in items]:
            f.result()


# --- the stack and the operator ------------------------------------------------------------
def use_inprocess_workers(stack: Stack) -> None:
    """Map the fake worker image to the node agent's in-process fake worker (stack override,
    read before testbed/images.yaml), so thousands of worker pods fit on a small machine."""
    path = stack.image_override
    existing: list[JSON] = (yaml.safe_load(path.read_text()) if path.exists() else None) or []
    ours: JSON = {"image": "voicefleet.dev/testbed/fake-worker*", "inprocess": "fake-worker"}
    path.write_text(
        yaml.safe_dump([ours, *(r for r in existing if r.get("image") != ours["image"])])
    )


@dataclass
class Cluster:
    stack: Stack
    kube: Kube
    operator: OperatorProcess
    workdir: Path

    @property
    def operator_pid(self) -> int:
        assert self.operator.proc is not None
        return self.operator.proc.pid

    def counters(self, namespace: str) -> dict[str, float]:
        """The operator's own counters for one namespace: reconciles, autoscaler decisions
        by direction, failed worker reads by error (why a fleet scaled when it did)."""
        out: dict[str, float] = {}
        wanted = {
            OPERATOR_RECONCILES.name.removesuffix("_total"): None,
            AUTOSCALER_DECISIONS.name.removesuffix("_total"): "direction",
            AUTOSCALER_SCRAPE_FAILURES.name.removesuffix("_total"): "error",
        }
        try:
            text = self.operator.metrics()
        except OSError as e:
            # At 5,000 VoiceAgents the busy operator's /metrics took longer than the read's
            # 5 s: say so in the result rather than lose the run.
            print(f"[bench] the operator's /metrics did not answer: {e}", flush=True)
            return {"unavailable": math.nan}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                base = s.name.removesuffix("_total")
                if base not in wanted or s.labels.get("namespace") != namespace:
                    continue
                by = wanted[base]
                key = base.removeprefix("voicefleet_") + (f".{s.labels.get(by)}" if by else "")
                out[key] = out.get(key, 0.0) + s.value
        return out

    def namespace(self, name: str) -> str:
        self.kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        # The stack's LiveKit credentials: what failover reads there must be answered, as
        # on a cluster (a wrong key made every VoiceAgent's failover retry each second).
        secrets(self.kube, name, self.stack.livekit_secret)
        return name

    def delete_namespace(self, name: str, timeout: float = 240) -> bool:
        """Delete and wait until it is gone (its pods drained and removed)."""
        with contextlib.suppress(client.ApiException):
            self.kube.core.delete_namespace(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.kube.core.read_namespace(name)
            except client.ApiException as e:
                if e.status == 404:
                    return True
                raise
            time.sleep(1)
        return False


@contextlib.contextmanager
def cluster(
    inprocess: bool = True,
    operator_args: Sequence[str] = (),
    *,
    keda: bool = False,
    custom_metrics: bool = False,
) -> Iterator[Cluster]:
    """A stack (own or reused), the CRD, the operator's RBAC, and the operator running with
    its production timers. `keda`: the stack runs real KEDA (added to a reused one).
    `custom_metrics`: the operator serves custom.metrics.k8s.io through the API server's
    aggregation layer (mode hpa's metric), its APIServices Available before this yields."""
    workdir = Path(tempfile.mkdtemp(prefix="voicefleet-bench-"))
    reuse = os.environ.get("VOICEFLEET_TESTBED")
    stack: Stack | None = None
    own = False
    if reuse:
        candidate = Stack(Path(reuse))
        running = candidate.running()
        if running and all(running.values()):
            stack = candidate
            if keda:
                stack.add_keda()
    if stack is None:
        stack = Stack(workdir / "testbed", progress=lambda m: print(f"[testbed] {m}", flush=True))
        own = True
        stack.up(keda=keda)
    op: OperatorProcess | None = None
    try:
        kube = Kube.admin(stack)
        if inprocess:
            use_inprocess_workers(stack)
        install_crd(kube)
        # Production timers (the operator's defaults): the tests' shorter resync and
        # failover sweep would dominate idle cost at scale.
        extra = [*operator_args, *os.environ.get("BENCH_OPERATOR_ARGS", "").split()]
        token = install_rbac(kube)  # also the operator's namespace
        if custom_metrics:
            extra += install_custom_metrics_api(stack, kube, workdir / "custom-metrics-tls")
        op = OperatorProcess(stack, token, workdir, [*production_timers(), *extra])
        op.start()
        if custom_metrics:
            wait_for(lambda: custom_metrics_available(kube), 60, "custom metrics APIServices")
        yield Cluster(stack, kube, op, workdir)
    finally:
        if op is not None:
            op.stop()
        if own:
            stack.down()
        shutil.rmtree(workdir, ignore_errors=True)
