"""Benchmark 1 (issue 8): how fast the operator turns VoiceAgents into running fleets.

For each size N (default 1, 100, 1,000) VoiceAgents are created at once (8 client threads)
in a fresh namespace; watches timestamp when each one's Deployment appears and when the
VoiceAgent turns `Ready` (its one worker pod, the testbed's fake worker, is Ready).

Baseline, same run, same API server, right before: kube-controller-manager's Deployment
controller, a Go controller of the same kind: N plain Deployments (replicas 0, so nothing
but the controller's own work is timed) created the same way, timed until each has its
ReplicaSet. The ratio compares p95 create-to-Deployment with p95 create-to-ReplicaSet.
A second baseline, also right before: N plain Deployments of the same fake worker with
one replica (what a hand-written Deployment gets), timed until each has a Ready pod; the
ratio of the last VoiceAgent Ready to the last plain Deployment Ready says how much of
"all Ready" the operator adds to what the stack itself takes.

Also the operator's CPU seconds and peak RSS over the run, and its idle CPU (% of one
core) over `--idle-seconds` with all N VoiceAgents present and Ready, once nothing on
their path has changed for 10 s and the operator's CPU has stopped falling ("idle"
includes the long polls of every worker's /sessions, failover's sweeps and the
reconciler's timer), also per VoiceAgent and per worker pod.

python -m bench.reconcile [--sizes 1,100,1000] [--idle-seconds 30] [--process-workers]
(env: BENCH_RECONCILE_SIZES, BENCH_IDLE_SECONDS)
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.cluster import (
    FAKE_IMAGE,
    Cluster,
    CpuMeter,
    FirstTimes,
    LastEvent,
    Watcher,
    cluster,
    condition_true,
    machine_load,
    memory_mb,
    owner,
    parallel,
    settle,
)
from bench.common import Result, Run, idle_per_unit, operator_flags, summary
from voicefleet_contract import GROUP, KIND, LABEL_INSTANCE, PLURAL, VERSION, Env

JSON = dict[str, Any]


def va_body(name: str, livekit_url: str) -> JSON:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            # The stack's LiveKit, with its credentials: the fake workers do not register,
            # but failover lists its rooms, as on a cluster.
            "livekit": {"url": livekit_url, "credentialsSecret": "livekit"},
            "model": {"apiKeySecret": {"name": "openai"}},
            "template": {"image": FAKE_IMAGE},
        },
    }


def deployment_body(name: str, replicas: int = 0) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": FAKE_IMAGE,
                            # The fake worker serves on its pod's IP (the operator's pods
                            # get it the same way); without it every pod takes loopback.
                            "env": [
                                {
                                    "name": Env.POD_IP,
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                }
                            ],
                        }
                    ]
                },
            },
        },
    }


# The path from a VoiceAgent's create to its Ready, in order: who moves each step is the
# operator (deployment, ready), kube-controller-manager (replicaset, pod,
# deployment_ready), kube-scheduler (pod_scheduled) and the node agent (pod_ready).
STAGES = (
    "created", "deployment", "replicaset", "pod", "pod_scheduled", "pod_ready",
    "deployment_ready", "ready",
)  # fmt: skip


def instance_of(obj: JSON) -> str | None:
    """The VoiceAgent a ReplicaSet or pod belongs to (its instance label)."""
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_INSTANCE)


def stages(times: dict[str, dict[str, float]]) -> JSON:
    """Each step's duration (`<from>_to_<to>`), over the VoiceAgents seen at both ends."""
    out: JSON = {}
    for a, b in itertools.pairwise(STAGES):
        both = [x for x in times[b] if x in times[a]]
        out[f"{a}_to_{b}"] = summary([times[b][x] - times[a][x] for x in both])
    return out


def baseline(c: Cluster, n: int, timeout: float) -> list[float]:
    """kube-controller-manager: create N Deployments, time until each has its ReplicaSet."""
    ns = c.namespace(f"bench-baseline-{n}")
    created: dict[str, float] = {}
    rs = FirstTimes()

    def on_rs(kind: str, obj: JSON, t: float) -> None:
        dep = owner(obj, "Deployment")
        if kind == "ADDED" and dep:
            rs.see(dep, t)

    names = [f"d{i:04d}" for i in range(n)]

    def create(name: str) -> None:
        created[name] = time.monotonic()
        c.kube.custom.create_namespaced_custom_object(
            "apps", "v1", ns, "deployments", deployment_body(name)
        )

    with Watcher(c.kube, "apps", "v1", "replicasets", ns, on_rs):
        parallel(create, names)
        rs.wait_all(names, timeout)
    c.delete_namespace(ns)
    return [rs.times[x] - created[x] for x in names if x in rs.times]


def baseline_ready(c: Cluster, n: int, timeout: float) -> JSON:
    """What a hand-written Deployment gets from the same stack: N plain Deployments of the
    fake worker (replicas 1, no operator involved) created the same way, timed until each
    has a Ready replica. The floor the stage itself puts under "all Ready": kube-controller-
    manager, the scheduler and the node agent on the same 2 cores."""
    ns = c.namespace(f"bench-plain-{n}")
    created: dict[str, float] = {}
    ready = FirstTimes()

    def on_dep(kind: str, obj: JSON, t: float) -> None:
        if kind != "DELETED" and ((obj.get("status") or {}).get("readyReplicas") or 0) >= 1:
            ready.see(obj["metadata"]["name"], t)

    names = [f"p{i:04d}" for i in range(n)]

    def create(name: str) -> None:
        created[name] = time.monotonic()
        c.kube.custom.create_namespaced_custom_object(
            "apps", "v1", ns, "deployments", deployment_body(name, replicas=1)
        )

    with Watcher(c.kube, "apps", "v1", "deployments", ns, on_dep):
        t0 = time.monotonic()
        parallel(create, names)
        all_ready = ready.wait_all(names, timeout)
    last = max(ready.times.values(), default=math.nan)
    out = {
        "create_to_ready_s": summary(
            [ready.times[x] - created[x] for x in names if x in ready.times]
        ),
        "ready_count": len(ready.times),
        "first_create_to_last_ready_s": last - t0 if all_ready else math.nan,
    }
    if not c.delete_namespace(ns):
        out["note"] = "namespace deletion did not finish in time"
    return out


def voiceagents(c: Cluster, n: int, timeout: float, idle_seconds: float, last: bool) -> JSON:
    ns = c.namespace(f"bench-reconcile-{n}")
    created: dict[str, float] = {}
    deployed, ready = FirstTimes(), FirstTimes()
    # Where Deployment -> Ready goes, VoiceAgent by VoiceAgent (its one worker pod): the
    # first time each stage was seen, from watches of every object on the path.
    stage_times: dict[str, FirstTimes] = {s: FirstTimes() for s in STAGES[2:-1]}

    def on_dep(kind: str, obj: JSON, t: float) -> None:
        va = owner(obj, KIND)
        if kind == "ADDED" and va:
            deployed.see(va, t)
        if va and ((obj.get("status") or {}).get("readyReplicas") or 0) >= 1:
            stage_times["deployment_ready"].see(va, t)

    def on_rs(kind: str, obj: JSON, t: float) -> None:
        va = instance_of(obj)
        if kind == "ADDED" and va:
            stage_times["replicaset"].see(va, t)

    def on_pod(kind: str, obj: JSON, t: float) -> None:
        va = instance_of(obj)
        if not va or kind == "DELETED":
            return
        stage_times["pod"].see(va, t)
        if (obj.get("spec") or {}).get("nodeName"):
            stage_times["pod_scheduled"].see(va, t)
        if condition_true(obj, "Ready"):
            stage_times["pod_ready"].see(va, t)

    def on_va(kind: str, obj: JSON, t: float) -> None:
        if kind != "DELETED" and condition_true(obj, "Ready"):
            ready.see(obj["metadata"]["name"], t)

    names = [f"va{i:04d}" for i in range(n)]
    events = LastEvent()

    def seen(on: Callable[[str, JSON, float], None]) -> Callable[[str, JSON, float], None]:
        def both(kind: str, obj: JSON, t: float) -> None:
            events.see(t)
            on(kind, obj, t)

        return both

    def create(name: str) -> None:
        created[name] = time.monotonic()
        c.kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, va_body(name, c.stack.livekit_url)
        )

    pid = c.operator_pid
    with (
        Watcher(c.kube, "apps", "v1", "deployments", ns, seen(on_dep)),
        Watcher(c.kube, "apps", "v1", "replicasets", ns, seen(on_rs)),
        Watcher(c.kube, "", "v1", "pods", ns, seen(on_pod)),
        Watcher(c.kube, GROUP, VERSION, PLURAL, ns, seen(on_va)),
    ):
        run = CpuMeter(pid).start()
        t0 = time.monotonic()
        parallel(create, names)
        created_in = time.monotonic() - t0
        all_ready = ready.wait_all(names, timeout)
        run.stop()
        print(
            f"[reconcile] {n}: {len(ready.times)} Ready; idle for {idle_seconds:.0f}s", flush=True
        )
        last_ready = max(ready.times.values(), default=math.nan)
        # Idle: everything present and Ready, nothing changing (no event on the path for
        # 10 s: the controllers' last status writes come long after the last Ready at
        # 1,000), and the operator's CPU no longer falling.
        quiet_after = events.wait_quiet(10.0, 300.0)
        settling = settle(pid)
        idle = CpuMeter(pid).start()
        time.sleep(idle_seconds)  # pacing: the figure is what the operator spends meanwhile
        idle.stop()
    rss, peak = memory_mb(pid)
    counters = c.counters(ns)
    to_dep = [deployed.times[x] - created[x] for x in names if x in deployed.times]
    to_ready = [ready.times[x] - created[x] for x in names if x in ready.times]
    out = {
        "create_to_deployment_s": summary(to_dep),
        "create_to_ready_s": summary(to_ready),
        "all_ready": all_ready,
        "ready_count": len(to_ready),
        "creates_took_s": created_in,
        "ready_fraction": len(to_ready) / n,
        # Only when every one made it in time: a partial fleet's "last" is not the last.
        "first_create_to_last_ready_s": last_ready - t0 if all_ready else math.nan,
        "operator_cpu_seconds": run.cpu,
        "operator_cpu_per_second": run.per_second,
        "idle_cpu_percent": 100 * idle.per_second,
        **idle_per_unit(idle.per_second, n, len(stage_times["pod_ready"].times)),
        "idle_measured_s": idle.wall,
        # The operator's CPU (cores) in 5 s windows after all were Ready, until it stopped
        # falling: the burst's tail, before the idle measurement.
        "settling_cpu_per_second": settling,
        # From the last Ready to 10 s without an event on the path (NaN: not within 300 s).
        "quiet_after_ready_s": quiet_after,
        "operator_rss_mb": rss,
        "operator_peak_rss_mb": peak,
        "load_avg_1m": machine_load(),
        "operator_counters": counters,
        "stages_s": stages(
            {
                "created": created,
                "deployment": deployed.times,
                **{k: v.times for k, v in stage_times.items()},
                "ready": ready.times,
            }
        ),
    }
    # The last size's namespace goes with the stack (deleting N VoiceAgents waits for the
    # operator to stop each one's daemon and drop its finalizer: minutes at 1,000).
    if not last and not c.delete_namespace(ns):
        out["note"] = "namespace deletion did not finish in time"
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__)
    p.add_argument("--sizes", default=os.environ.get("BENCH_RECONCILE_SIZES", "1,100,1000"))
    p.add_argument(
        "--idle-seconds", type=float, default=float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
    )
    p.add_argument(
        "--process-workers",
        action="store_true",
        help="a process per fake worker pod instead of the node agent's in-process ones",
    )
    p.add_argument(
        "--name",
        default="reconcile",
        help="the result file, bench/results/<name>.json (a run past 1,000 beside the "
        "targeted one, e.g. --sizes 5000 --name reconcile-5000)",
    )
    args = p.parse_args(argv or [])
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    result = Result(args.name, run=Run(flags=list(argv or [])))
    result.notes.append(
        "baseline: kube-controller-manager (Go) Deployment -> ReplicaSet on the same API "
        "server, measured right before each size; all times from the client's create call "
        "to the watch event"
    )
    if not args.process_workers:
        result.notes.append("worker pods: fake workers served in-process by the node agent")
    with cluster(inprocess=not args.process_workers) as c:
        assert result.run is not None
        result.run.operator_flags = operator_flags(c.operator.argv)
        for n in sizes:
            timeout = max(120.0, 0.3 * n)
            print(f"[reconcile] {n}: baseline ...", flush=True)
            base = baseline(c, n, timeout)
            print(f"[reconcile] {n}: plain Deployments to Ready ...", flush=True)
            plain = baseline_ready(c, n, timeout)
            print(f"[reconcile] {n}: voiceagents ...", flush=True)
            # The full window where the targets are (1,000) and past them.
            idle = args.idle_seconds if n >= min(1000, max(sizes)) else min(10.0, args.idle_seconds)
            fig = voiceagents(c, n, timeout, idle, last=n == sizes[-1])
            fig["baseline_create_to_replicaset_s"] = b = summary(base)
            if "p95" in b and "p95" in fig["create_to_deployment_s"]:  # n >= 20 on both sides
                fig["ratio_p95_deployment_vs_baseline"] = (
                    fig["create_to_deployment_s"]["p95"] / b["p95"]
                )
            fig["baseline_plain_deployments_ready"] = plain
            if not math.isnan(plain["first_create_to_last_ready_s"]):
                fig["ratio_all_ready_vs_plain_deployments"] = (
                    fig["first_create_to_last_ready_s"] / plain["first_create_to_last_ready_s"]
                )
            result.figures[f"n{n}"] = fig
            print(f"[reconcile] {n}: {fig}", flush=True)
        top = "n1000" if 1000 in sizes else f"n{max(sizes)}"
        if max(sizes) > 1000 and 1000 not in sizes:
            result.notes.append("no targets: the targets are for 1,000; this shows the growth")
            top = ""
        result.targets = (
            {}
            if not top
            else {
                f"{top}.ready_fraction": ">= 1",
                f"{top}.first_create_to_last_ready_s": "< 60",
                f"{top}.ratio_p95_deployment_vs_baseline": "< 2",
                f"{top}.idle_cpu_percent": "< 5",
                f"{top}.operator_peak_rss_mb": "< 300",
            }
        )
        if max(sizes) < 1000:
            result.notes.append(f"sizes run: {sizes} (the 60 s target is for 1,000)")
    result.report()


if __name__ == "__main__":
    main(sys.argv[1:])
