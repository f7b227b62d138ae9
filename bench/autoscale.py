"""Benchmark 2 (issues 8, 15): how fast autoscaling reacts to a step in live sessions: the
built-in autoscaler against real KEDA and the real HPA, measured in the same run.

Systems, each with VoiceAgents of its own in a namespace of its own, one after another on
one stack (the operator running with its production timers):
- builtin: mode builtin; the operator reads every worker's sessions and scales.
- hpa: mode hpa; the operator renders an HPA on `voicefleet_worker_active_sessions` and
  serves custom.metrics.k8s.io itself (`--custom-metrics-port`, through the API server's
  aggregation layer, wired as in tests/operator/test_hpa_cluster.py); the HPA controller of
  kube-controller-manager scales, at its defaults (15 s sync, 0.1 tolerance).
- keda: mode keda; the operator renders the ScaledObject (pollingInterval 5 s, its HPA
  behaviour); real KEDA (operator and metrics API server) makes an HPA, which asks KEDA's
  metrics server, which asks the testbed's Prometheus (scraping the workers every 2 s).
- keda_defaults: the same, but once the fleet is up the benchmark removes from every
  rendered ScaledObject the fields the operator sets and KEDA defaults (pollingInterval ->
  30 s, cooldownPeriod -> 300 s, advanced -> the HPA's own behaviour), and waits until
  KEDA has rewritten its HPAs. The operator re-applies a ScaledObject only at a full
  reconcile (resync 10 min); a step whose ScaledObject is not at defaults right before it
  is not taken (counted as `steps_not_at_defaults`).

Protocol, the same for every system (the arithmetic is bench/autoscale_plan.py): for each
size P:V (default 10:10 and 200:100), P fake worker pods across V VoiceAgents (P/V each,
held by minReplicas; maxPerWorker 10, targetUtilization 1, no buffer, scale-down
stabilisation 3600 s, so nothing scales down during a run). Once every worker is Ready
(and for hpa and keda every HPA has read its metric once), `--steps` steps spread over the
VoiceAgents: a step sets one worker's live sessions (`POST /control`) to 10 x (current +
1), so its VoiceAgent needs exactly one more worker; the reaction time is from just before
that request to the watch event with the Deployment's new `spec.replicas`. A VoiceAgent's
steps run in sequence, each after a random 0.5-15.5 s pause once the previous one was seen
and its new worker is Ready, so no step is pending when the next starts and steps fall at
every phase of a 15 s sync; the VoiceAgents run in parallel. No step waits for a
scale-down (the HPA's is 300 s): each goes up from where the last left its VoiceAgent, and
the plan keeps every VoiceAgent under 10 workers, where the HPA's 10 % tolerance would
ignore one more worker. A step not seen within `--step-timeout` is missed (and ends that
VoiceAgent's steps). Also the operator's CPU with the builtin fleet up and idle.

Reported per size and system: reaction n, p50, max and the p95 when n >= 20, every
sample, and baseline / builtin ratios of p50 and p95 (of max, named so, under 20).

python -m bench.autoscale [--sizes 10:10,200:100] [--steps 30]
    [--systems builtin,hpa,keda,keda_defaults] [--idle-seconds 20] [--step-timeout 120]
    [--process-workers]
(env: BENCH_AUTOSCALE_SIZES, BENCH_AUTOSCALE_STEPS, BENCH_AUTOSCALE_SYSTEMS)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.autoscale_plan import Plan, parse_sizes, ratios, reaction_summary, step_sessions
from bench.cluster import (
    FAKE_IMAGE,
    Cluster,
    CpuMeter,
    Watcher,
    cluster,
    condition_true,
    machine_load,
    memory_mb,
    owner,
    parallel,
    settle,
)
from bench.common import Result, Run, idle_per_unit, operator_flags
from tests.operator.cluster import wait_for
from voicefleet_contract import GROUP, KIND, LABEL_INSTANCE, METRICS_PORT, PLURAL, VERSION
from voicefleet_testbed.binaries import versions

JSON = dict[str, Any]
PER_WORKER = 10
SCALE_DOWN_WINDOW_S = 3600
PACING_S = (0.5, 15.5)
SYSTEMS = {"builtin": "builtin", "hpa": "hpa", "keda": "keda", "keda_defaults": "keda"}
BASELINES = ("hpa", "keda", "keda_defaults")
HPA_API, KEDA = "autoscaling/v2", ("keda.sh", "v1alpha1", "scaledobjects")
# JSON merge patch: KEDA's defaults wherever the operator's ScaledObject sets a value.
TO_KEDA_DEFAULTS = {"spec": {"pollingInterval": None, "cooldownPeriod": None, "advanced": None}}


def va_body(name: str, mode: str, plan: Plan, livekit_url: str) -> JSON:
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
            "sessions": {"maxPerWorker": PER_WORKER, "drainTimeoutSeconds": 5},
            "autoscaling": {
                "mode": mode,
                "minReplicas": plan.per_voiceagent,
                "maxReplicas": plan.max_replicas,
                "targetUtilization": 1.0,
                "bufferSessions": 0,
                "scaleDownStabilizationSeconds": SCALE_DOWN_WINDOW_S,
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
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


class Fleet:
    """Each VoiceAgent's Deployment (spec.replicas, when it changed, readyReplicas), from a
    watch; waiters wake on every change."""

    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}
        self.changed_at: dict[str, float] = {}
        self.ready: dict[str, int] = {}
        self.cond = threading.Condition()

    def on_event(self, kind: str, obj: JSON, t: float) -> None:
        va = owner(obj, KIND)
        if va is None or kind == "DELETED":
            return
        n = int(obj.get("spec", {}).get("replicas", 0))
        with self.cond:
            if self.replicas.get(va) != n:
                self.replicas[va], self.changed_at[va] = n, t
            self.ready[va] = int((obj.get("status") or {}).get("readyReplicas") or 0)
            self.cond.notify_all()

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def has_ready(self, va: str, n: int) -> bool:
        return self.ready.get(va, 0) >= n

    def wait_above(self, va: str, n: int, timeout: float) -> float | None:
        """When replicas first exceeded n, or None on timeout."""
        ok = self.wait(lambda: self.replicas.get(va, 0) > n, timeout)
        return self.changed_at[va] if ok else None


def first_worker_ips(c: Cluster, ns: str) -> dict[str, str]:
    """VoiceAgent -> the IP of its first ready worker (by pod name): the one stepped."""
    out: dict[str, str] = {}
    pods = sorted(c.kube.list("v1", "Pod", ns), key=lambda p: p["metadata"]["name"])
    for p in pods:
        va = (p["metadata"].get("labels") or {}).get(LABEL_INSTANCE)
        ip = (p.get("status") or {}).get("podIP")
        if va and ip and condition_true(p, "Ready") and not p["metadata"].get("deletionTimestamp"):
            out.setdefault(va, ip)
    return out


def hpas(c: Cluster, ns: str) -> list[JSON]:
    return c.kube.list(HPA_API, "HorizontalPodAutoscaler", ns)


def all_hpas_read(c: Cluster, ns: str, count: int) -> bool:
    """Every VoiceAgent's HPA exists and has read its metric once."""
    got = hpas(c, ns)
    return len(got) == count and all((h.get("status") or {}).get("currentMetrics") for h in got)


def keda_hpas_at_defaults(c: Cluster, ns: str, count: int) -> bool:
    """KEDA rewrote every HPA from a ScaledObject without `advanced`: no behaviour of ours
    (our scale-down window) left in it."""
    got = hpas(c, ns)
    windows = [
        ((h["spec"].get("behavior") or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds")
        for h in got
    ]
    return len(got) == count and SCALE_DOWN_WINDOW_S not in windows


def at_keda_defaults(c: Cluster, ns: str, va: str) -> bool:
    so: JSON = c.kube.custom.get_namespaced_custom_object(*KEDA[:2], ns, KEDA[2], va)  # type: ignore[assignment]
    return not {"pollingInterval", "cooldownPeriod", "advanced"} & so["spec"].keys()


def measure(c: Cluster, system: str, plan: Plan, args: argparse.Namespace) -> JSON:
    """One system at one size: its fleet up, its steps, its namespace deleted."""
    ns = c.namespace(f"bench-autoscale-{system.replace('_', '-')}-{plan.workers}")
    names = [f"va{i:03d}" for i in range(plan.voiceagents)]
    fleet = Fleet()
    fig: JSON = {}
    t_start = time.monotonic()
    with Watcher(c.kube, "apps", "v1", "deployments", ns, fleet.on_event):
        parallel(
            lambda n: c.kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, va_body(n, SYSTEMS[system], plan, c.stack.livekit_url)
            ),
            names,
        )
        fleet.wait(
            lambda: all(fleet.has_ready(n, plan.per_voiceagent) for n in names),
            max(180.0, 0.5 * plan.workers),
        )
        fig["fleet_ready_s"] = time.monotonic() - t_start
        if system == "keda_defaults":
            for n in names:
                c.kube.custom.patch_namespaced_custom_object(
                    *KEDA[:2], ns, KEDA[2], n, TO_KEDA_DEFAULTS,
                    _content_type="application/merge-patch+json",
                )  # fmt: skip
            wait_for(lambda: keda_hpas_at_defaults(c, ns, len(names)), 120, "KEDA's HPAs redone")
        if system != "builtin":
            wait_for(lambda: all_hpas_read(c, ns, len(names)), 180, "every HPA reading")
        else:  # scrape cost: all workers up, nothing changing, the start-up's tail done
            fig["settling_cpu_per_second"] = settle(c.operator_pid)
            idle = CpuMeter(c.operator_pid).start()
            time.sleep(args.idle_seconds)  # pacing: the figure is the operator's CPU meanwhile
            fig["operator_cpu_s_per_s"] = per_s = idle.stop().per_second
            fig.update(idle_per_unit(per_s, len(names), sum(fleet.ready.values())))
        ips = first_worker_ips(c, ns)
        fig["workers_ready"] = sum(fleet.ready.get(n, 0) for n in names)
        reactions: list[float] = []
        counts = {"missed": 0, "not_at_defaults": 0}
        lock = threading.Lock()

        def steps_of(i: int) -> None:
            va = names[i]
            for _ in range(plan.rounds()[i]):
                time.sleep(random.uniform(*PACING_S))  # pacing: any phase of the loops
                if system == "keda_defaults" and not at_keda_defaults(c, ns, va):
                    with lock:
                        counts["not_at_defaults"] += 1
                    continue
                current = fleet.replicas[va]
                t0 = time.monotonic()
                control(ips[va], step_sessions(current, PER_WORKER))
                seen = fleet.wait_above(va, current, args.step_timeout)
                with lock:
                    if seen is None:
                        counts["missed"] += 1
                    else:
                        reactions.append(seen - t0)
                if seen is None or not fleet.wait(partial(fleet.has_ready, va, current + 1), 120):
                    return  # this VoiceAgent's state is unknown: no more steps on it

        stepped = [i for i, r in enumerate(plan.rounds()) if r and names[i] in ips]
        parallel(steps_of, stepped, threads=max(1, len(stepped)))
        fig["reaction_s"] = reaction_summary(reactions)
        fig["reactions_s"] = sorted(round(r, 3) for r in reactions)
        fig["steps_missed"] = counts["missed"]
        if system == "keda_defaults":
            fig["steps_not_at_defaults"] = counts["not_at_defaults"]
        fig["load_avg_1m"] = machine_load()
        if system == "builtin":
            fig["operator_rss_mb"], fig["operator_peak_rss_mb"] = memory_mb(c.operator_pid)
            fig["operator_counters"] = c.counters(ns)
    fig["wall_s"] = time.monotonic() - t_start
    c.delete_namespace(ns)
    return fig


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench.autoscale", description=__doc__)
    p.add_argument("--sizes", default=env("BENCH_AUTOSCALE_SIZES", "10:10,200:100"),
                   help="workers:voiceagents, comma-separated")  # fmt: skip
    p.add_argument("--steps", type=int, default=int(env("BENCH_AUTOSCALE_STEPS", "30")),
                   help="steps per system and size (a p95 needs 20)")  # fmt: skip
    p.add_argument("--systems", default=env("BENCH_AUTOSCALE_SYSTEMS", ",".join(SYSTEMS)))
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--step-timeout", type=float, default=120.0)
    p.add_argument("--process-workers", action="store_true")
    args = p.parse_args(argv or [])
    systems = [s for s in args.systems.split(",") if s]
    if unknown := set(systems) - SYSTEMS.keys():
        p.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    plans = [Plan(w, v, args.steps, PER_WORKER).check() for w, v in parse_sizes(args.sizes)]
    run = Run(flags=list(argv or []))
    result = Result("autoscale", run=run)
    result.notes += [
        f"sizes (workers:voiceagents) {args.sizes}, {args.steps} steps per system and size, "
        f"paced {PACING_S[0]}-{PACING_S[1]} s; protocol in bench/autoscale.py's docstring",
        f"KEDA {versions()['KEDA_VERSION']} (operator + metrics API server, host processes); "
        "HPA: kube-controller-manager's controller at its defaults (15 s sync, 0.1 "
        "tolerance, no HPA flags set); Prometheus scrapes the workers every 2 s",
        "keda: the ScaledObject as the operator renders it (pollingInterval 5 s); "
        "keda_defaults: the same with pollingInterval, cooldownPeriod and advanced removed "
        "(KEDA's defaults: 30 s, 300 s, the HPA's own behaviour)",
        "ratios: baseline / builtin, of p50 and of p95 (of max, named so, under 20 steps)",
    ]
    if max(pl.workers for pl in plans) < 2000:
        result.notes.append(
            "2,000 workers not run: a 2-core machine shared with other work, and a ~40 min "
            "budget for four systems with 15-30 s steps"
        )
    if not args.process_workers:
        result.notes.append("worker pods: fake workers served in-process by the node agent")
    needs_keda = any(SYSTEMS[s] == "keda" for s in systems)
    with cluster(
        inprocess=not args.process_workers, keda=needs_keda, custom_metrics="hpa" in systems
    ) as c:
        run.operator_flags = operator_flags(c.operator.argv)
        for plan in plans:
            size: JSON = {
                "voiceagents": plan.voiceagents,
                "workers_per_voiceagent": plan.per_voiceagent,
                "steps_planned": plan.steps,
            }
            for system in systems:
                print(f"[autoscale] {plan.workers} workers: {system} ...", flush=True)
                size[system] = measure(c, system, plan, args)
                print(f"[autoscale] {plan.workers} {system}: {size[system]['reaction_s']}")
            if "builtin" in size:
                ours = size["builtin"]["reaction_s"]
                size["ratios"] = {
                    b: ratios(size[b]["reaction_s"], ours) for b in BASELINES if b in size
                }
            key = f"w{plan.workers}"
            result.figures[key] = size
            result.targets[f"{key}.builtin.reaction_s.p95"] = "< 2"
            result.targets[f"{key}.ratios.hpa.p95"] = ">= 7"
    result.report()


if __name__ == "__main__":
    main(sys.argv[1:])
