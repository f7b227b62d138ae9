"""`make demo`: the local stack, the example VoiceAgent, and real calls to it.

1. the stack with its real node and the operator installed by the chart (what `make up`
   starts);
2. `kubectl apply -f examples/voiceagent.yaml` as it is (its two Secrets and the
   VoiceAgent); the operator makes a worker Deployment, whose pods the kubelet runs as
   containers of the worker image `make images` built, under Pod Security `restricted`,
   reaching LiveKit and the Realtime stand-in through their Services;
3. waits for the VoiceAgent to be Ready, showing its status as it changes;
4. a few simulated callers (real WebRTC through LiveKit, token dispatch by agent name)
   talk to it while the VoiceAgent's status (ready/desired workers, sessions/capacity)
   and each turn's latency are shown live; then a summary and where to look next.

The stack and the VoiceAgent stay up afterwards (`make down` stops everything). Exits 1
when the VoiceAgent never became Ready or a call went unanswered or dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import yaml

from voicefleet_contract import METRICS_PORT

from . import user_install
from .binaries import REPO_DIR, Binaries
from .caller import Caller, Summary
from .caller.report import CallReport, percentile
from .kube import Kube
from .realtime import StandInClient
from .stack import LIVEKIT_KEY, Stack
from .user_install import NAMESPACE as OPERATOR_NAMESPACE
from .user_install import RELEASE

EXAMPLE = REPO_DIR / "examples" / "voiceagent.yaml"
NAMESPACE = "default"
API_VERSION, KIND = "voicefleet.dev/v1alpha1", "VoiceAgent"
READY_TIMEOUT = 180.0  # a cold worker imports livekit-agents on 2 shared cores


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def _step(n: int, text: str) -> None:
    print(f"\n==> [{n}/4] {text}", flush=True)


@dataclass(frozen=True)
class Example:
    """The example, as applied."""

    text: str
    name: str
    agent_name: str
    silence_ms: float  # spec.model.turnDetection.silenceDurationMs (the VAD's end of turn)


def load_example() -> Example:
    """examples/voiceagent.yaml, as it is: it names LiveKit and the model by Service."""
    text = EXAMPLE.read_text()
    (va,) = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == KIND]
    td = va["spec"]["model"].get("turnDetection") or {}
    return Example(
        text,
        va["metadata"]["name"],
        va["spec"].get("agentName") or va["metadata"]["name"],
        float(td.get("silenceDurationMs", 500)),
    )


def kubectl_apply(stack: Stack, text: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(stack.kubeconfig)}
    kubectl = str(Binaries.locate().kubectl)
    out = subprocess.run(
        [kubectl, "apply", "-n", NAMESPACE, "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    for line in (out.stdout + out.stderr).splitlines():
        print(f"    {line}")
    if out.returncode != 0:
        raise RuntimeError(f"kubectl apply failed (exit {out.returncode})")


def _ready(va: dict[str, Any] | None) -> bool:
    if not va:
        return False
    st = va.get("status") or {}
    gen = va.get("metadata", {}).get("generation")
    return st.get("observedGeneration") == gen and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )


def _status_line(va: dict[str, Any] | None) -> str:
    st = (va or {}).get("status") or {}
    ready: dict[str, Any] = next(
        (c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    reason = ready.get("reason", "no status yet")
    msg = ready.get("message", "")
    return f"workers {st.get('workers', '0/0')}  {reason}" + (f": {msg}" if msg else "")


def wait_ready(kube: Kube, name: str, timeout: float = READY_TIMEOUT) -> bool:
    """Until the VoiceAgent is Ready, printing its status as it changes (and every 10 s)."""
    t0 = time.monotonic()
    last, last_print = "", 0.0
    while True:
        va = kube.get(API_VERSION, KIND, name, NAMESPACE)
        line = _status_line(va)
        now = time.monotonic() - t0
        if line != last or now - last_print >= 10:
            print(f"    +{now:4.1f}s  {line}", flush=True)
            last, last_print = line, now
        if _ready(va):
            return True
        if now > timeout:
            return False
        time.sleep(0.5)


def _registered(ip: str) -> bool:
    """The worker's own word (`voicefleet_worker_registered` on its pod IP) that it is
    registered with LiveKit for dispatch."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return False
    return any(
        line.split()[-1] == "1.0"
        for line in text.splitlines()
        if line.startswith("voicefleet_worker_registered ")
    )


def wait_registered(kube: Kube, name: str, timeout: float = 60) -> bool:
    """Until every ready worker is registered with LiveKit. A pod is Ready when
    livekit-agents' health endpoint answers, which can be a moment before its registration
    completes; a room created in that moment gets no agent (LiveKit does not dispatch it
    later), so the callers wait for the registration itself."""
    t0 = time.monotonic()
    announced: set[str] = set()
    while True:
        pods = [
            p
            for p in _pods(kube, name)
            if p.get("status", {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
        ]
        for p in pods:
            pod = p["metadata"]["name"]
            if pod not in announced and _registered(p["status"]["podIP"]):
                announced.add(pod)
                image = p["spec"]["containers"][0]["image"]
                print(
                    f"    +{time.monotonic() - t0:4.1f}s  worker {pod} ({p['status']['podIP']} "
                    f"on {p['spec'].get('nodeName')}, {image}) registered with LiveKit",
                    flush=True,
                )
        if pods and all(p["metadata"]["name"] in announced for p in pods):
            return True
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.3)


def _pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    sel = f"app.kubernetes.io/instance={name},app.kubernetes.io/name=voicefleet-worker"
    return kube.list("v1", "Pod", NAMESPACE, sel)


def _log_hint(name: str) -> str:
    return f"kubectl logs -l app.kubernetes.io/instance={name} --tail=50"


def _operator_log_hint() -> str:
    return f"kubectl -n {OPERATOR_NAMESPACE} logs deploy/{RELEASE} --tail=50"


# --- the calls ----------------------------------------------------------------------------


class Live:
    """What the demo prints while calls run."""

    def __init__(self, model_delay_s: float) -> None:
        self.model_delay_s = model_delay_s
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"    {time.monotonic() - self.t0:5.1f}s  {text}", flush=True)


async def _watch_status(kube: Kube, name: str, live: Live, stop: asyncio.Event) -> None:
    """Print `kubectl get va`'s READY (ready/desired workers) and SESSIONS (active/capacity,
    which the operator's autoscaler reads from the workers' /sessions every second)
    columns whenever they change."""
    last = ""
    while True:
        stopping = stop.is_set()  # one more look after the stop, for the final count
        try:
            va = await asyncio.to_thread(kube.get, API_VERSION, KIND, name, NAMESPACE)
        except Exception as e:  # an API blip is not the demo's failure
            va, line = None, f"(status unavailable: {type(e).__name__})"
        if va is not None:
            st = va.get("status") or {}
            line = (
                f"kubectl get va: READY {st.get('workers', '?')}  "
                f"SESSIONS {st.get('sessions', '?')}"
            )
        if line != last:
            live.say(line)
            last = line
        if stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def _call(
    stack: Stack, ex: Example, i: int, turns: int, prefix: str, live: Live
) -> CallReport:
    await asyncio.sleep(i * 1.5)  # staggered, so the session count visibly climbs
    who = f"caller {i + 1}"
    caller = Caller(
        stack.livekit_url,
        LIVEKIT_KEY,
        stack.livekit_secret,
        room=f"{prefix}-{i + 1}",
        agent_name=ex.agent_name,
        identity=f"demo-caller-{i + 1}",
    )
    try:
        await caller.connect()
        live.say(f"{who} joined room {caller.room_name} (token dispatches {ex.agent_name!r})")
        if not await caller.wait_agent(30):
            caller.report.errors.append("no agent joined within 30 s")
            live.say(f"{who}: NO AGENT joined within 30 s")
            return caller.report
        live.say(f"{who}: agent joined after {_ms(caller.report.dispatch_s)}")
        for _ in range(turns):
            t = await caller.turn(1.0, timeout=15)
            if t.latency_s is None:
                live.say(f"{who} turn {t.index + 1}: UNANSWERED within 15 s")
                continue
            live.say(
                f"{who} turn {t.index + 1}: heard the agent after {_ms(t.latency_s)} "
                f"({_ms(t.latency_s - live.model_delay_s)} without the model delay), "
                f"answer {t.answer_s or 0:.1f} s"
            )
    except Exception as e:  # a failed call is a result
        caller.report.errors.append(f"{type(e).__name__}: {e}")
        live.say(f"{who}: FAILED: {type(e).__name__}: {e}")
    finally:
        await caller.close()
        live.say(f"{who} hung up")
    return caller.report


async def run_calls(
    stack: Stack, kube: Kube, ex: Example, callers: int, turns: int, live: Live
) -> Summary:
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_status(kube, ex.name, live, stop))
    prefix = f"demo-{int(time.time()) % 100000}"
    try:
        reports = await asyncio.gather(
            *(_call(stack, ex, i, turns, prefix, live) for i in range(callers))
        )
        # The autoscaler reads the workers' /sessions every second: the count goes to 0.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            va = await asyncio.to_thread(kube.get, API_VERSION, KIND, ex.name, NAMESPACE)
            if ((va or {}).get("status") or {}).get("activeSessions") == 0:
                break
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await watcher
    return Summary(list(reports))


def _prometheus_sessions(stack: Stack, pods: list[str], at_least: int) -> float | None:
    """Sessions the current workers counted, as Prometheus scraped them (every 2 s): polled
    until it has seen `at_least`, for up to 8 s. None if Prometheus is unavailable."""
    sel = "|".join(pods)
    q = f'sum(voicefleet_worker_sessions_started_total{{namespace="{NAMESPACE}",pod=~"{sel}"}})'
    url = f"{stack.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': q})}"
    seen = None
    deadline = time.monotonic() + 8
    while seen is None or seen < at_least:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                result = json.loads(r.read())["data"]["result"]
            seen = float(result[0]["value"][1]) if result else None
        except (OSError, ValueError, KeyError, IndexError):
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return seen


def print_summary(summary: Summary, live: Live, ex: Example) -> None:
    d = summary.to_dict()
    lat = summary.latencies
    net = [x - live.model_delay_s for x in lat]
    dispatch = [c.dispatch_s for c in summary.calls if c.dispatch_s is not None]
    served = sum(1 for c in summary.calls if c.dispatch_s is not None and c.unanswered == 0)
    print("\n==> summary")
    print(f"    calls served      {served}/{d['calls']}   dropped {d['dropped']}")
    print(f"    turns             {d['answered']} answered, {d['unanswered']} unanswered")
    print(
        f"    turn latency      p50 {_ms(percentile(lat, 0.5))}, p95 {_ms(percentile(lat, 0.95))}"
        f"  (end of the caller's speech -> first agent audio heard)"
    )
    print(
        f"    without model     p50 {_ms(percentile(net, 0.5))}, p95 {_ms(percentile(net, 0.95))}"
        f"  (minus the stand-in's {_ms(live.model_delay_s)} model delay; includes the"
        f" {ex.silence_ms:.0f} ms of silence that ends a turn, turnDetection.silenceDurationMs)"
    )
    print(
        f"    dispatch latency  p50 {_ms(percentile(dispatch, 0.5))}, max {_ms(max(dispatch, default=None))}"
        "  (caller joined -> agent in the room)"
    )
    for e in d["errors"]:
        print(f"    error             {e}")


def where_next(stack: Stack, kube: Kube, ex: Example, seen: float | None) -> None:
    rel = stack.dir.relative_to(REPO_DIR) if stack.dir.is_relative_to(REPO_DIR) else stack.dir
    q = "histogram_quantile(0.95, sum by (le) (rate(voicefleet_worker_turn_latency_seconds_bucket[5m])))"
    prom = f"{stack.prometheus_url}/graph?{urllib.parse.urlencode({'g0.expr': q, 'g0.tab': '0'})}"
    dashboards = sorted(
        str(p.relative_to(REPO_DIR)) for p in (REPO_DIR / "dashboards").glob("*.json")
    )
    print("\n==> where to look next (the stack and the VoiceAgent stay up)")
    forward, url = user_install.call_page_forward()
    print(f"    talk to it        {forward}   # the chart's call page, then in a browser here:")
    print(f"                      {url}?agent={NAMESPACE}/{ex.name}   (allow the microphone)")
    print(f"    . {rel}/env               # kubectl, LIVEKIT_*, OPENAI_BASE_URL for this stack")
    print(f"    kubectl get va -o wide; kubectl describe va {ex.name}; kubectl get pods")
    print(
        f"    python -m voicefleet_testbed.caller --agent {ex.agent_name} --callers 5 --turns 3"
        "   # more calls"
    )
    print(f"    Prometheus        {stack.prometheus_url}  (p95 turn latency: {prom})")
    if seen is not None:
        print(
            f"                      voicefleet_worker_sessions_started_total: {seen:.0f} on the"
            " current workers (every call since they started)"
        )
    print(
        f"    Grafana           import {', '.join(dashboards)} (datasource: the Prometheus above)"
    )
    print(f"    worker logs       {_log_hint(ex.name)}")
    print(f"    operator log      {_operator_log_hint()}")
    print(f"    stand-in          curl -s {stack.realtime_url}/stats   # what the model saw")
    print("    make down         # stops the stack (and with it the VoiceAgent's workers)")


def run_demo(stack: Stack, callers: int = 3, turns: int = 3) -> int:
    t_start = time.monotonic()
    _step(
        1, "the local stack with its real node, the operator installed by the chart (as `make up`)"
    )
    holder = stack.real_node_elsewhere()
    if holder:
        print(f"error: the testbed in {holder} runs this machine's real node, which the demo "
              f"needs: stop it first (VOICEFLEET_TESTBED={holder} testbed down)")  # fmt: skip
        return 1
    stack.up(operator=True, real_node=True)
    print(stack.summary())
    if not stack.state.chart:
        print(
            f"error: the stack in {stack.dir} was started without the real node "
            "(testbed up --no-real-node or --no-operator): make down && make demo"
        )
        return 1
    t_up = time.monotonic()

    _step(2, "kubectl apply -f examples/voiceagent.yaml   (namespace default)")
    ex = load_example()
    kube = Kube.admin(stack)
    kubectl_apply(stack, ex.text)

    _step(3, f"waiting for VoiceAgent {ex.name!r} to be Ready (the operator makes a worker "
          "Deployment; the kubelet runs its pods from the worker image)")  # fmt: skip
    if not wait_ready(kube, ex.name) or not wait_registered(kube, ex.name):
        print(f"error: VoiceAgent {ex.name}'s workers not Ready and registered in time")
        print(f"    worker logs: {_log_hint(ex.name)}")
        print(f"    operator log: {_operator_log_hint()}")
        print(f"    . {stack.dir}/env && kubectl describe va {ex.name}")
        return 1

    try:
        settings = asyncio.run(StandInClient(stack.realtime_url).stats())["settings"]
        model_delay_s = float(settings.get("modelDelayMs", 200)) / 1000
    except (OSError, RuntimeError, KeyError, ValueError):
        model_delay_s = 0.2
    _step(
        4,
        f"{callers} simulated callers, {turns} turns each, over WebRTC through LiveKit "
        f"(the Realtime stand-in answers after {_ms(model_delay_s)})",
    )
    live = Live(model_delay_s)
    summary = asyncio.run(run_calls(stack, kube, ex, callers, turns, live))
    print_summary(summary, live, ex)
    pods = [p["metadata"]["name"] for p in _pods(kube, ex.name)]
    served = sum(1 for c in summary.calls if c.dispatch_s is not None)
    seen = _prometheus_sessions(stack, pods, served) if pods else None
    where_next(stack, kube, ex, seen)
    ok = summary.ok()
    print(
        f"\n{'demo OK' if ok else 'demo FAILED: a call went unanswered, dropped or failed'}"
        f" ({time.monotonic() - t_up:.0f}s after the stack was up,"
        f" {time.monotonic() - t_start:.0f}s in all)"
    )
    return 0 if ok else 1
