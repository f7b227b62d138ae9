"""Issue 6 with real workers: a call whose worker dies is served again.

A VoiceAgent of two real voicefleet workers (livekit-agents, the OpenAI Realtime plugin
talking to the stand-in), the operator with webhooks on, real WebRTC callers. The worker
serving a call is SIGKILLed, or its pod force-deleted: a new agent joins the room, answers
the caller's next turn, the operator counts one failover, and no second agent ever joins.
The LiveKit restart runs last: it disturbs every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit import api

from voicefleet_contract import Env
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

from ..operator.cluster import OperatorProcess
from .failover_scenario import SPEECH_S, WorkerFleet, operator_metric, until

pytestmark = [pytest.mark.cluster, pytest.mark.livekit, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def workers(
    stack: Stack,
    kube: Kube,
    namespace: str,
    name: str,
    replicas: int = 2,
    env: dict[str, str] | None = None,
    agent: dict[str, str] | None = None,
    drain_timeout: int = 5,
) -> AsyncIterator[WorkerFleet]:
    f = WorkerFleet(stack, kube, namespace, name)
    try:
        await f.start(replicas=replicas, env=env, agent=agent, drain_timeout=drain_timeout)
        yield f
    finally:
        await f.close()


async def _stays(caller: Caller, joins: int, seconds: float) -> None:
    """No agent joins beyond `joins` over `seconds` (absence needs a window)."""
    more = await caller.changes.wait_for(lambda: caller.report.agent_joins > joins, seconds)
    assert not more, f"a second agent joined: {caller.report.to_dict()}"


async def _no_dispatch(f: WorkerFleet, room: str) -> bool:
    async with api.LiveKitAPI(
        f.stack.livekit_url.replace("ws://", "http://"), LIVEKIT_KEY, f.stack.livekit_secret
    ) as lk:
        found = await lk.agent_dispatch.list_dispatch(room)
    return not [d for d in found if d.agent_name == f.agent_name]


@pytest.mark.parametrize("how", ["sigkill", "force-delete"])
async def test_call_of_a_dead_worker_is_served_again(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess, how: str
) -> None:
    name = "killed" if how == "sigkill" else "deleted"
    async with workers(stack, kube, namespace, name) as f:
        caller = await f.call(f"{name}-{namespace}")
        labels = {"namespace": namespace, "voiceagent": name}
        rec = await f.fail_over(caller, how)
        print(f"\n{how}: {rec}")
        assert rec.new_agent and rec.new_agent != rec.first_agent, rec
        assert rec.recovered, f"the caller never heard the new agent: {rec}"
        # The worker now serving the call lists it with the new agent's identity.
        _, listed = await f.serving(caller.room_name)
        assert listed == rec.new_agent
        await until(
            lambda: asyncio.to_thread(
                lambda: (
                    operator_metric(
                        operator, "voicefleet_failovers_total", outcome="redispatched", **labels
                    )
                    == 1
                )
            ),
            10,
            "the failover counted",
        )
        assert operator_metric(operator, "voicefleet_failover_latency_seconds_count", **labels) == 1
        latency = operator_metric(operator, "voicefleet_failover_latency_seconds_sum", **labels)
        assert 0 < latency < 10, latency
        sources = {
            s: operator_metric(
                operator, "voicefleet_failover_orphans_found_total", source=s, **labels
            )
            for s in ("worker", "pod", "webhook", "sweep")
        }
        assert sum(sources.values()) == 1, sources
        # LiveKit drops the dead agent ~20 s after the kill and sends participant_left
        # (CONNECTION_TIMEOUT): that late notice must not bring a second agent.
        left = await caller.changes.wait_for(lambda: caller.report.agent_leaves >= 1, 45)
        assert left, f"LiveKit never dropped the dead agent: {caller.report.to_dict()}"
        await _stays(caller, 2, 6)
        report = caller.report
        assert report.agent_joins == 2 and report.agent_leaves == 1, report
        assert not report.dropped, report
        assert caller.agents == {rec.new_agent}
        # ... and the operator took it for the same loss, not a second one.
        found = operator_metric(operator, "voicefleet_failover_orphans_found_total", **labels)
        assert found == 1, sources
        assert operator_metric(operator, "voicefleet_failovers_total", **labels) == 1
        print(f"{how}: sources {sources}, operator latency {latency:.2f}s")


async def test_a_livekit_agents_module_deployed_by_a_voiceagent_is_failed_over(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """Issue 16: examples/livekit-agent, written as livekit-agents' examples are (nothing of
    ours), deployed by a VoiceAgent's spec.agent.module: dispatched by LiveKit, it
    answers, its worker lists the call in /sessions, when that worker is SIGKILLed the
    call is served again by the other, and that one drains when its pod is deleted. The testbed's worker "image" is this checkout, so
    PYTHONPATH points at the example where a real image would `pip install` it; the
    example's model reads OPENAI_BASE_URL (the stand-in) and, since it uses OpenAI, its key
    from spec.model.apiKeySecret."""
    env = {
        "PYTHONPATH": str(REPO / "examples" / "livekit-agent"),
        "OPENAI_BASE_URL": stack.openai_base_url(f"byo-{namespace[-5:]}"),
    }
    agent = {"module": "livekit_agent"}
    # a drain long enough to hear a turn in it (the others cut calls after 5 s)
    async with workers(stack, kube, namespace, "byo", env=env, agent=agent, drain_timeout=60) as f:
        assert f.deployment_env()[Env.AGENT] == "livekit_agent"
        assert f.scenario == f"byo-{namespace[-5:]}"
        caller = await f.call(f"byo-{namespace}")
        _, listed = await f.serving(caller.room_name)
        assert listed in caller.agents
        rec = await f.fail_over(caller, "sigkill")
        print(f"\nlivekit-agents module, sigkill: {rec}")
        assert rec.new_agent and rec.new_agent != rec.first_agent, rec
        assert rec.recovered, f"the caller never heard the new agent: {rec}"
        pod, listed = await f.serving(caller.room_name)
        assert listed == rec.new_agent
        # ... and drains: a graceful delete (what a rollout or an eviction does) leaves the
        # call with its worker, which says it is draining and keeps answering.
        name = pod["metadata"]["name"]
        await asyncio.to_thread(f.kube.core.delete_namespaced_pod, name, namespace)

        async def draining_with_the_call() -> bool:
            try:
                report = await asyncio.to_thread(f.sessions, pod)
            except OSError:
                return False
            return report.draining and any(r.room == caller.room_name for r in report.rooms)

        await until(draining_with_the_call, 15, f"{name} draining with the call")
        turn = await caller.turn(SPEECH_S, timeout=20)
        assert turn.latency_s is not None, "the draining worker's agent stopped answering"


async def test_a_call_the_worker_ends_on_purpose_is_not_failed_over(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """The model fails for good (a fatal error): the real worker ends the session and its
    agent leaves while the caller is still there. The operator must tell that from a
    crash (room gone from /sessions and agent gone at once, `CLIENT_INITIATED` webhook)."""
    async with workers(stack, kube, namespace, "ended", replicas=1) as f:
        caller = await f.call(f"ended-{namespace}")
        pod, _ = await f.serving(caller.room_name)
        await f.standin.configure(
            errorNow={"type": "invalid_request_error", "code": "insufficient_quota"}
        )
        left = await caller.changes.wait_for(lambda: caller.report.agent_leaves >= 1, 30)
        assert left, f"the agent did not end the call: {caller.report.to_dict()}"
        # The worker ends the session once its agent has left the room (after the caller
        # saw it leave), with the outcome the close recorded.

        async def ended_as_error() -> bool:
            n = await asyncio.to_thread(
                f.worker_metric, pod, "voicefleet_worker_sessions_ended_total", outcome="error"
            )
            return n == 1

        await until(ended_as_error, 10, "the session ended as an error")
        # The operator recognised the end: it deleted the call's dispatch (what keeps the
        # sweep off the room).
        await until(lambda: _no_dispatch(f, caller.room_name), 15, "the dispatch deleted")
        # Longer than the worker view's 3 s grace and a sweep (3 s period, 5 s agentless).
        await _stays(caller, 1, 12)
        labels = {"namespace": namespace, "voiceagent": "ended"}
        assert operator_metric(operator, "voicefleet_failovers_total", **labels) == 0
        assert operator_metric(operator, "voicefleet_failover_orphans_found_total", **labels) == 0


async def test_livekit_restart_workers_reregister_and_serve(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """Last in the file: the LiveKit server restarts while the fleet is idle."""
    async with workers(stack, kube, namespace, "relink") as f:
        pods = f.live_pods()
        before = {
            p["metadata"]["name"]: f.worker_metric(
                p, "voicefleet_worker_reconnections_total", link="livekit"
            )
            for p in pods
        }
        saw_unregistered: set[str] = set()
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                for p in pods:
                    with contextlib.suppress(OSError):
                        gauge = await asyncio.to_thread(
                            f.worker_metric, p, "voicefleet_worker_registered"
                        )
                        if gauge == 0:
                            saw_unregistered.add(p["metadata"]["name"])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.to_thread(stack.restart, "livekit-server")

            async def reregistered() -> bool:
                def check() -> bool:
                    return all(
                        f.worker_metric(p, "voicefleet_worker_registered") == 1
                        and f.worker_metric(
                            p, "voicefleet_worker_reconnections_total", link="livekit"
                        )
                        > before[p["metadata"]["name"]]
                        for p in pods
                    )

                return await asyncio.to_thread(check)

            await until(reregistered, 60, "every worker to register again")
        finally:
            stop.set()
            await watcher
        assert saw_unregistered == set(before), (saw_unregistered, before)
        # The same pods (no restart) serve the next caller.
        assert {p["metadata"]["name"] for p in f.live_pods()} == set(before)
        caller = await f.call(f"after-restart-{namespace}")
        assert caller.report.agent_joins == 1 and caller.report.latencies, caller.report


# livekit-agents' own default gives up after 16 attempts (min(2 x attempt, 10) s apart,
# 140 s of waiting): a worker left at that default would exit during this outage.
OUTAGE_S = 150.0


async def test_a_livekit_outage_longer_than_livekit_agents_retries_is_ridden_out(
    stack: Stack, kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """LiveKit goes away for longer than livekit-agents' default retries, with a call on.
    A single-node LiveKit keeps its rooms in memory, so that call ends with it (what its
    caller's SDK does); what must hold: no worker exits or restarts, none keeps a phantom
    session from the dead call, every one registers again within its 10 s retry once
    LiveKit is back (the reconnection counter rises), and a new call is answered by one
    agent at once."""
    async with workers(stack, kube, namespace, "outage", replicas=1) as f:
        (pod,) = f.live_pods()
        restarts = pod["status"]["containerStatuses"][0]["restartCount"]
        before = f.worker_metric(pod, "voicefleet_worker_reconnections_total", link="livekit")
        caller = await f.call(f"before-outage-{namespace}")
        await asyncio.to_thread(stack.stop_part, "livekit-server")
        try:

            def unregistered() -> bool:
                return f.worker_metric(pod, "voicefleet_worker_registered") == 0

            await until(lambda: asyncio.to_thread(unregistered), 30, "the worker to see it gone")
            # The outage itself: the worker must stay up all along (polled, not slept).
            loop = asyncio.get_running_loop()
            end = loop.time() + OUTAGE_S
            while loop.time() < end:
                (now,) = f.pods()
                status = now["status"]["containerStatuses"][0]
                assert status["restartCount"] == restarts and status.get("state", {}).get(
                    "running"
                ), status
                await asyncio.sleep(2)
        finally:
            await caller.close()
            await asyncio.to_thread(stack.restart, "livekit-server")

        def back() -> bool:
            return (
                f.worker_metric(pod, "voicefleet_worker_registered") == 1
                and f.worker_metric(pod, "voicefleet_worker_reconnections_total", link="livekit")
                > before
                and f.worker_metric(pod, "voicefleet_worker_active_sessions") == 0
            )

        await until(lambda: asyncio.to_thread(back), 30, "the worker registered again, idle")
        (now,) = f.pods()
        assert now["metadata"]["uid"] == pod["metadata"]["uid"]
        assert now["status"]["containerStatuses"][0]["restartCount"] == restarts
        fresh = await f.call(f"after-outage-{namespace}")
        assert fresh.report.agent_joins == 1 and fresh.report.latencies, fresh.report
