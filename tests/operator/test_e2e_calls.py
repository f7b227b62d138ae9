"""End to end through the operator (issue 4): operator-created workers, run by the node
agent, answer real calls.

A VoiceAgent applied to the real API server becomes a worker Deployment; the node agent
runs its pod as the real worker (`ghcr.io/voicefleet/worker` -> `python -m
voicefleet_worker` from this checkout, testbed/images.yaml). A simulated caller over
real WebRTC dispatches the agent by name in its join token and is answered by the
Realtime stand-in (the one double; a scenario of its own, through `model.baseURL`). While
the call is live the VoiceAgent's status counts it (the operator's autoscaler reads the
worker's `/sessions`), and the worker's `/metrics` on its pod IP counts it too.

One real worker costs ~160 MB and a few seconds of CPU to start: one test.
"""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from voicefleet_contract import METRICS_PORT
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.realtime import StandInClient
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

from .cluster import OperatorProcess, condition, get_va, secrets, table, voiceagent

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow]

WORKER_IMAGE = "ghcr.io/voicefleet/worker:0.1.0"  # the real worker (the fixture's default is fake)
SELECTOR = "app.kubernetes.io/instance={},app.kubernetes.io/name=voicefleet-worker"
MODEL_DELAY_MS = 200
SILENCE_MS = 300
T = TypeVar("T")


async def until(check: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `check()` (in a thread: the caller's audio runs on this loop) until truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = await asyncio.to_thread(check)
        except Exception as e:  # an API or HTTP blip while waiting is not the failure
            last = e
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.2)


def worker_metrics(ip: str) -> dict[str, float]:
    """The worker's /metrics on its pod IP: `name{label="v"}` -> value."""
    with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def test_operator_created_worker_answers_a_call(
    operator: OperatorProcess, stack: Stack, kube: Kube, namespace: str
) -> None:
    name = "support"
    agent_name = f"op-e2e-{uuid.uuid4().hex[:6]}"  # no other test's worker takes its calls
    standin = StandInClient(stack.realtime_url, scenario=agent_name)
    await standin.configure(modelDelayMs=MODEL_DELAY_MS, responseMs=1000)
    secrets(kube, namespace, stack.livekit_secret)
    spec: dict[str, Any] = {
        "agentName": agent_name,
        "livekit": {"url": stack.livekit_url, "credentialsSecret": "livekit"},
        "model": {
            "apiKeySecret": {"name": "openai"},
            "baseURL": standin.base_url,  # stack.openai_base_url(agent_name)
            "instructions": "You are a test agent.",
            "turnDetection": {"type": "server_vad", "silenceDurationMs": SILENCE_MS},
        },
        "sessions": {"maxPerWorker": 2, "drainTimeoutSeconds": 5},
        "autoscaling": {"mode": "builtin", "minReplicas": 1, "maxReplicas": 1},
        "template": {"image": WORKER_IMAGE},
    }
    kube.create(voiceagent(name, namespace, spec))

    def ready() -> dict[str, Any] | None:
        va = get_va(kube, namespace, name)
        gen = (va or {}).get("metadata", {}).get("generation")
        st = (va or {}).get("status") or {}
        ok = condition(va, "Ready").get("status") == "True" and st.get("observedGeneration") == gen
        return va if ok else None

    await until(ready, 150, "the VoiceAgent Ready (a real worker started and registered)")
    (pod,) = kube.list("v1", "Pod", namespace, SELECTOR.format(name))
    assert pod["spec"]["containers"][0]["image"] == WORKER_IMAGE
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and ip != "127.0.0.1"
    # Ready comes from livekit-agents' health endpoint, which answers a moment before the
    # registration with LiveKit completes: wait for the worker's own word.
    await until(
        lambda: worker_metrics(ip).get("voicefleet_worker_registered") == 1,
        30,
        "the worker registered with LiveKit",
    )

    def status() -> dict[str, Any]:
        return dict(((get_va(kube, namespace, name) or {}).get("status")) or {})

    caller = Caller(
        stack.livekit_url,
        LIVEKIT_KEY,
        stack.livekit_secret,
        room=f"{agent_name}-call",
        agent_name=agent_name,  # token dispatch by agent name
    )
    try:
        await caller.connect()
        assert await caller.wait_agent(30), "no agent joined the room"
        assert caller.report.dispatch_s is not None

        # A turn: the caller speaks, the operator-run worker answers with audio.
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the agent never answered"
        print(
            f"\ndispatch {caller.report.dispatch_s * 1000:.0f} ms; turn latency "
            f"{turn.latency_s * 1000:.0f} ms (of which {SILENCE_MS} ms end-of-turn silence "
            f"and {MODEL_DELAY_MS} ms model delay)"
        )
        assert 0 < turn.latency_s < 10  # sanity only
        assert turn.answer_s is not None and turn.answer_s > 0.5

        # The VoiceAgent counts the live session: the autoscaler read the worker's /sessions.
        await until(lambda: status().get("activeSessions") == 1, 15, "activeSessions 1")
        assert status()["capacity"] == 2
        await until(lambda: status().get("sessions") == "1/2", 15, "the SESSIONS column 1/2")
        row = table(kube, namespace)["rows"][0]["cells"]
        assert row[:4] == [name, agent_name, "1/1", "1/2"]  # kubectl get va

        # The worker's own metrics on its pod IP.
        m = worker_metrics(ip)
        assert m["voicefleet_worker_active_sessions"] == 1
        assert m["voicefleet_worker_sessions_started_total"] == 1
        await until(
            lambda: worker_metrics(ip)["voicefleet_worker_turn_latency_seconds_count"] >= 1,
            10,
            "the turn latency observed by the worker",
        )
        stats = await standin.stats()  # the worker reached its model through baseURL
        assert stats["sessions"] >= 1 and stats["responses"]["completed"] >= 1, stats
    finally:
        await caller.close()

    # Hung up: the session ends on the worker and in the VoiceAgent's status.
    await until(
        lambda: (s := status()).get("activeSessions") == 0 and s.get("sessions") == "0/2",
        20,
        "activeSessions 0 after the call",
    )
    ended = 'voicefleet_worker_sessions_ended_total{outcome="completed"}'
    await until(lambda: worker_metrics(ip).get(ended) == 1, 20, "the session counted completed")
    m = worker_metrics(ip)
    assert m["voicefleet_worker_active_sessions"] == 0
    assert m["voicefleet_worker_sessions_started_total"] == 1
    assert m["voicefleet_worker_dispatch_latency_seconds_count"] == 1
    # A WebRTC caller (a SIP one counts as sip: tests/e2e/test_telephony.py).
    assert m['voicefleet_worker_callers_total{origin="webrtc"}'] == 1
    assert m['voicefleet_worker_callers_total{origin="sip"}'] == 0
    assert not caller.report.dropped and caller.report.errors == []
    assert "Traceback" not in operator.tail(400), operator.tail(400)
