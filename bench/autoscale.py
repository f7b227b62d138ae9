"""Benchmark 2 (issue 8): how fast the built-in autoscaler reacts to a step in live sessions.

For each size P:V (default 10:1, 200:20, 2000:200: P worker pods across V VoiceAgents,
P/V each, held there by `minReplicas`), the fake workers start at 0 sessions. A step sets
one worker's live sessions (`POST /control`) so its VoiceAgent needs one more worker; the
reaction time is from just before that request to the watch event that shows the
Deployment's new `spec.replicas`. Steps rotate over the VoiceAgents, paced at random
0.5-1.5 s apart so they fall at every phase of the operator's 1 s tick.

Also the operator's scrape cost: its CPU seconds per wall second over `--idle-seconds`
with all P workers up (it reads every ready worker's /sessions once a second).

Baselines, side by side:
- KEDA-equivalent: a poller in this process that, like KEDA's Prometheus scaler at its
  default `pollingInterval` (30 s), queries the testbed's real Prometheus (which scrapes
  the fake workers every 2 s) for each fleet's summed sessions and scales the VoiceAgent
  through its scale subresource (VoiceAgents in mode `none`, so the operator only carries
  the count to the Deployment). Its steps fall at random times over two polling periods.
  KEDA proper adds an HPA sync on top (it feeds an HPA), so this is its best case.
- HPA: its 15 s sync period (`--horizontal-pod-autoscaler-sync-period`), a stated figure:
  the mean wait alone is 7.5 s, the worst 15 s, before scrape and adapter delays.

python -m bench.autoscale [--sizes 10:1,200:20,2000:200] [--steps 12] [--keda-steps 8]
    [--keda-interval 30] [--idle-seconds 20] [--process-workers]
(env: BENCH_AUTOSCALE_SIZES, BENCH_AUTOSCALE_STEPS, BENCH_KEDA_STEPS, BENCH_KEDA_INTERVAL)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

from bench.cluster import (
    FAKE_IMAGE,
    Cluster,
    CpuMeter,
    FirstTimes,
    Watcher,
    cluster,
    condition_true,
    machine_load,
    memory_mb,
    owner,
    parallel,
)
from bench.common import Result, summary
from voicefleet_contract import GROUP, KIND, LABEL_INSTANCE, METRICS_PORT, PLURAL, VERSION
from voicefleet_contract.metrics import WORKER_ACTIVE_SESSIONS

JSON = dict[str, Any]
LIVEKIT_URL = "ws://127.0.0.1:7880"  # never dialled: the fake worker does not register
PER_WORKER = 10
HPA_SYNC_SECONDS = 15.0


def va_body(name: str, mode: str, workers: int, headroom: int) -> JSON:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "livekit": {"url": LIVEKIT_URL, "credentialsSecret": "livekit"},
            "model": {"apiKeySecret": {"name": "openai"}},
            "template": {"image": FAKE_IMAGE},
            "sessions": {"maxPerWorker": PER_WORKER, "drainTimeoutSeconds": 5},
            "autoscaling": {
                "mode": mode,
                "minReplicas": workers,
                "maxReplicas": workers + headroom,
                "targetUtilization": 1.0,
                "bufferSessions": 0,
                # No scale-down during the run: every step is an up-step.
                "scaleDownStabilizationSeconds": 3600,
            },
        },
    }


def control(ip: str, sessions: int) -> None:
    req = urllib.request.Request(
        f"http://{ip}:{METRICS_PORT}/control",
        data=json.dumps({"activeSessions": sessions}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    for attempt in range(3):  # a node agent serving thousands of workers may be slow
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
            return
        except TimeoutError:
            if attempt == 2:
                raise


class Replicas:
    """Deployment spec.replicas by owning VoiceAgent, from a watch; waiters wake on change."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.at: dict[str, float] = {}
        self.cond = threading.Condition()

    def on_event(self, kind: str, obj: JSON, t: float) -> None:
        va = owner(obj, KIND)
        if va is None or kind == "DELETED":
            return
        n = int(obj.get("spec", {}).get("replicas", 0))
        with self.cond:
            if self.now.get(va) != n:
                self.now[va], self.at[va] = n, t
                self.cond.notify_all()

    def wait_above(self, va: str, n: int, timeout: float) -> float | None:
        """The time replicas first exceeded n, or None on timeout."""
        with self.cond:
            if self.cond.wait_for(lambda: self.now.get(va, 0) > n, timeout):
                return self.at[va]
        return None


def create_fleet(
    c: Cluster, ns: str, names: list[str], mode: str, workers: int, headroom: int, timeout: float
) -> tuple[bool, float]:
    """Create the VoiceAgents and wait until every one is Ready (all its workers ready)."""
    ready = FirstTimes()

    def on_va(kind: str, obj: JSON, t: float) -> None:
        if kind != "DELETED" and condition_true(obj, "Ready"):
            st = obj.get("status") or {}
            if int(st.get("readyReplicas") or 0) >= workers:
                ready.see(obj["metadata"]["name"], t)

    t0 = time.monotonic()
    with Watcher(c.kube, GROUP, VERSION, PLURAL, ns, on_va):
        parallel(
            lambda n: c.kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, va_body(n, mode, workers, headroom)
            ),
            names,
        )
        ok = ready.wait_all(names, timeout)
    return ok, time.monotonic() - t0


def pod_ips(c: Cluster, ns: str) -> dict[str, list[str]]:
    """VoiceAgent -> its ready workers' IPs."""
    out: dict[str, list[str]] = {}
    for p in c.kube.list("v1", "Pod", ns):
        va = (p["metadata"].get("labels") or {}).get(LABEL_INSTANCE)
        ip = (p.get("status") or {}).get("podIP")
        if condition_true(p, "Ready") and va and ip and not p["metadata"].get("deletionTimestamp"):
            out.setdefault(va, []).append(ip)
    return out


def ours(c: Cluster, pods: int, vas: int, steps: int, idle_seconds: float, last: bool) -> JSON:
    per = max(1, pods // vas)
    ns = c.namespace(f"bench-autoscale-{pods}")
    names = [f"va{i:03d}" for i in range(vas)]
    fig: JSON = {"voiceagents": vas, "workers_per_voiceagent": per}
    reps = Replicas()
    pid = c.operator_pid
    with Watcher(c.kube, "apps", "v1", "deployments", ns, reps.on_event):
        ok, took = create_fleet(c, ns, names, "builtin", per, steps + 2, max(180.0, 0.15 * pods))
        ips = pod_ips(c, ns)
        fig["workers_ready"] = sum(len(v) for v in ips.values())
        fig["fleet_ready_s"] = took
        if not ok:
            fig["note"] = "not every VoiceAgent was Ready in time; steps use the ready ones"
        # Scrape cost: all workers up, nothing changing; the operator reads each once a second.
        idle = CpuMeter(pid).start()
        time.sleep(idle_seconds)  # pacing: the figure is the operator's CPU meanwhile
        idle.stop()
        print(f"[autoscale] {pods}: idle measured, stepping", flush=True)
        fig["operator_cpu_s_per_s"] = idle.per_second
        fig["operator_cpu_ms_per_worker_read"] = (
            1000 * idle.per_second / max(1, fig["workers_ready"])
        )
        reactions: list[float] = []
        missed = 0
        usable = [n for n in names if ips.get(n)]
        for i in range(steps):
            va = usable[i % len(usable)]
            with reps.cond:
                current = reps.now.get(va, per)
            time.sleep(random.uniform(0.5, 1.5))  # pacing: steps at every phase of the tick
            t0 = time.monotonic()
            control(ips[va][0], PER_WORKER * current + 1)  # needs current + 1 workers
            seen = reps.wait_above(va, current, 30)
            if seen is None:
                missed += 1
            else:
                reactions.append(seen - t0)
        fig["reaction_s"] = summary(reactions)
        fig["steps_missed"] = missed
        fig["ratio_hpa_sync_vs_p95"] = HPA_SYNC_SECONDS / fig["reaction_s"]["p95"]
        fig["operator_rss_mb"], fig["operator_peak_rss_mb"] = memory_mb(pid)
        fig["load_avg_1m"] = machine_load()
        fig["operator_counters"] = c.counters(ns)
    if not last:  # the last one goes with the stack
        c.delete_namespace(ns)
    return fig


def prom_sessions(prometheus_url: str, ns: str) -> dict[str, float]:
    q = f'sum by (voiceagent) ({WORKER_ACTIVE_SESSIONS.name}{{namespace="{ns}"}})'
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    return {x["metric"].get("voiceagent", ""): float(x["value"][1]) for x in body["data"]["result"]}


class KedaLikePoller:
    """KEDA's Prometheus scaler, reduced: every `interval`, sessions per fleet from
    Prometheus -> needed workers -> the VoiceAgent's scale subresource."""

    def __init__(self, c: Cluster, ns: str, names: list[str], interval: float) -> None:
        self.c, self.ns, self.names, self.interval = c, ns, names, interval
        self.stop = threading.Event()
        self.set_to: dict[str, int] = dict.fromkeys(names, 1)
        self.polls = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                sessions = prom_sessions(self.c.stack.prometheus_url, self.ns)
                for name in self.names:
                    needed = max(1, math.ceil(sessions.get(name, 0.0) / PER_WORKER))
                    if needed != self.set_to[name]:
                        self.c.kube.custom.patch_namespaced_custom_object_scale(
                            GROUP, VERSION, self.ns, PLURAL, name, {"spec": {"replicas": needed}}
                        )
                        self.set_to[name] = needed
                self.polls += 1
            except Exception as e:  # a failed poll is retried at the next interval, as KEDA
                print(f"[autoscale] keda-like poll failed: {e}", flush=True)
            self.stop.wait(self.interval)  # the polling interval itself


def keda_baseline(c: Cluster, steps: int, interval: float) -> JSON:
    ns = c.namespace("bench-autoscale-keda")
    names = [f"k{i:02d}" for i in range(steps)]
    reps = Replicas()
    fig: JSON = {"polling_interval_s": interval, "prometheus_scrape_interval_s": 2}
    with Watcher(c.kube, "apps", "v1", "deployments", ns, reps.on_event):
        create_fleet(c, ns, names, "none", 1, 2, 120)
        ips = pod_ips(c, ns)
        poller = KedaLikePoller(c, ns, names, interval)
        poller.thread.start()
        # Steps at random times over two polling periods, each on its own VoiceAgent.
        offsets = sorted(random.uniform(0, 2 * interval) for _ in names)
        start = time.monotonic()
        t0s: dict[str, float] = {}
        for name, off in zip(names, offsets, strict=True):
            time.sleep(max(0.0, start + off - time.monotonic()))  # pacing the steps
            t0s[name] = time.monotonic()
            control(ips[name][0], PER_WORKER + 1)  # needs 2 workers
        reactions = []
        for name in names:
            seen = reps.wait_above(name, 1, 3 * interval + 30)
            if seen is not None:
                reactions.append(seen - t0s[name])
        poller.stop.set()
        fig["reaction_s"] = summary(reactions)
        fig["steps"] = len(names)
        fig["steps_missed"] = len(names) - len(reactions)
    c.delete_namespace(ns)
    return fig


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench.autoscale", description=__doc__)
    p.add_argument("--sizes", default=env("BENCH_AUTOSCALE_SIZES", "10:1,200:20,2000:200"))
    p.add_argument("--steps", type=int, default=int(env("BENCH_AUTOSCALE_STEPS", "12")))
    p.add_argument("--keda-steps", type=int, default=int(env("BENCH_KEDA_STEPS", "8")))
    p.add_argument("--keda-interval", type=float, default=float(env("BENCH_KEDA_INTERVAL", "30")))
    p.add_argument("--idle-seconds", type=float, default=float(env("BENCH_IDLE_SECONDS", "20")))
    p.add_argument("--process-workers", action="store_true")
    args = p.parse_args(argv or [])
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",") if s.strip()]
    result = Result("autoscale")
    result.notes += [
        f"HPA baseline is its sync period, {HPA_SYNC_SECONDS:.0f} s (stated, not measured)",
        f"KEDA-like baseline: {args.keda_steps} steps over two {args.keda_interval:.0f} s "
        "polling periods, at the smallest size only (its delay is the polling interval, "
        "not the fleet size)",
    ]
    if not args.process_workers:
        result.notes.append("worker pods: fake workers served in-process by the node agent")
    with cluster(inprocess=not args.process_workers) as c:
        for i, (pods, vas) in enumerate(sizes):
            print(f"[autoscale] {pods} workers / {vas} voiceagents ...", flush=True)
            fig = ours(c, pods, vas, args.steps, args.idle_seconds, last=i == len(sizes) - 1)
            if i == 0 and args.keda_steps > 0:
                print("[autoscale] keda-like baseline ...", flush=True)
                keda = keda_baseline(c, args.keda_steps, args.keda_interval)
                result.figures["keda_like"] = keda
            if i == 0 and len(sizes) > 1 and not os.environ.get("VOICEFLEET_TESTBED"):
                # Only the KEDA-like baseline reads Prometheus. Its scrapes of every worker
                # (every 2 s) land on the node agent's one event loop, which also serves
                # the in-process workers' probes and the operator's long polls: at 2,000
                # workers that is its whole core (in a cluster each worker is a process).
                c.stack.stop_part("prometheus")
                result.notes.append(
                    "Prometheus stopped after the smallest size (only the KEDA-like "
                    "baseline uses it; its scrapes of thousands of in-process workers "
                    "would load the node agent)"
                )
            result.figures[f"w{pods}"] = fig
            print(f"[autoscale] {pods}: {fig}", flush=True)
            result.targets[f"w{pods}.reaction_s.p95"] = "< 2"
            result.targets[f"w{pods}.ratio_hpa_sync_vs_p95"] = ">= 7"
        if "keda_like" in result.figures:
            keda = result.figures["keda_like"]
            for pods, _ in sizes:
                fig = result.figures[f"w{pods}"]
                fig["ratio_keda_like_p95_vs_ours_p95"] = (
                    keda["reaction_s"]["p95"] / fig["reaction_s"]["p95"]
                )
                fig["ratio_keda_like_p50_vs_ours_p50"] = (
                    keda["reaction_s"]["p50"] / fig["reaction_s"]["p50"]
                )
    result.report()


if __name__ == "__main__":
    main(sys.argv[1:])
