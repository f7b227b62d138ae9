"""The worker process: one `AgentServer` registered with LiveKit under the config's agent
name, jobs run by an entrypoint (the stock Realtime agent or custom code) in threads or
job processes (job_runtime.py), and the voicefleet additions around it: session-based
load, readiness from registration, the metrics endpoint, draining on SIGTERM.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Final

from livekit.agents import AgentServer, JobExecutorType, JobProcess

from voicefleet_contract import Env
from voicefleet_contract.capacity import full_threshold

from .job_link import JobLinkServer
from .job_runtime import Prewarm, Runtime, setup_job_process, setup_job_thread
from .jobs import run_job
from .lk_private import server_connected
from .load import idle_processes, session_load
from .metrics import WorkerMetrics
from .one_agent import accept_marked
from .resume import (
    enabled as resume_enabled,
)
from .sdk import Entrypoint

log = logging.getLogger("voicefleet.worker")

REGISTRATION_POLL_S = 0.5
# livekit-agents' warm-up loads its local VAD and end-of-turn model (~250 MB) in every
# process without a multiprocessing parent, which includes a thread-executor worker. The
# Realtime model detects turns server-side, so the worker skips them (160 MB instead of
# 410 MB idle). A custom agent using the local turn detector can set the variable to 1.
PRELOAD_LOCAL_INFERENCE_ENV = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"


LIVEKIT_RETRIES: Final = 2**31 - 1  # at most 10 s apart: forever
# A new job process imports livekit-agents and the plugins before its first job
# (livekit-agents' default allows 10 s; a busy node can take longer)
PROCESS_SETUP_TIMEOUT_S: Final = 30.0


def build_server(
    runtime: Runtime,
    entrypoint: Entrypoint,
    link_path: str | None = None,
    prewarm: Prewarm | None = None,
) -> AgentServer:
    """The `AgentServer`; jobs in processes report through the job link at `link_path`;
    `prewarm` runs once in each job process (or thread) before its job."""
    s = runtime.settings
    capacity = s.config.sessions.maxPerWorker
    target = s.config.livekitTargetLoad
    os.environ.setdefault(PRELOAD_LOCAL_INFERENCE_ENV, "0")
    setup: Callable[[JobProcess], None]
    if s.job_executor == "process":
        if link_path is None:
            raise ValueError("jobs in processes need the job link's path")
        executor = JobExecutorType.PROCESS
        setup = functools.partial(setup_job_process, s, link_path, prewarm)
    else:
        executor = JobExecutorType.THREAD
        setup = functools.partial(setup_job_thread, runtime.job_runtime(), prewarm)

    def load_fnc(server: AgentServer) -> float:
        # the jobs livekit-agents runs, so its per-job estimate matches (see load.py)
        return session_load(len(server.active_jobs), capacity, target)

    server = AgentServer(
        job_executor_type=executor,
        setup_fnc=setup,
        initialize_process_timeout=PROCESS_SETUP_TIMEOUT_S,
        load_threshold=full_threshold(target),
        drain_timeout=s.config.sessions.drainTimeoutSeconds,
        num_idle_processes=idle_processes(capacity),
        ws_url=s.livekit_url,
        api_key=s.secrets.livekit_api_key,
        api_secret=s.secrets.livekit_api_secret,
        host=s.bind_address,
        port=s.health_port,
        load_fnc=load_fnc,
        # Never give up on LiveKit: livekit-agents' default (16 tries, ~2.5 min) exits the
        # process, and CrashLoopBackOff then delays recovery by minutes after LiveKit is
        # back. Retrying every 10 s forever keeps the pod alive and not Ready (`/ready`
        # follows registration) and re-registers within 10 s of LiveKit's return.
        max_retry=LIVEKIT_RETRIES,
        log_level="INFO",
    )
    server.rtc_session(
        functools.partial(run_job, entrypoint),
        agent_name=s.config.agentName,
        on_request=accept_marked,
    )
    return server


async def watch_registration(
    server: AgentServer,
    metrics: WorkerMetrics,
    on_change: Callable[[bool], None] = lambda _: None,
) -> None:
    """`voicefleet_worker_registered`, the LiveKit node registered with, and livekit
    reconnections. livekit-agents 1.8.9 emits
    `worker_registered` on each (re)registration but nothing on a lost connection, so the
    gauge follows the server's connection state (`lk_private.server_connected`).
    `on_change` hears every state: it is what `/ready` answers."""
    registrations = 0

    def on_registered(worker_id: str, server_info: Any = None, *_: Any) -> None:
        nonlocal registrations
        registrations += 1
        metrics.livekit_node.clear()  # one series: the node registered with now
        node = getattr(server_info, "node_id", "")
        metrics.livekit_node.labels(node=node, region=getattr(server_info, "region", "")).set(1)
        if registrations > 1:
            metrics.reconnections.labels(link="livekit").inc()
        metrics.registered.set(1)
        on_change(True)

    server.on("worker_registered", on_registered)
    try:
        while True:
            connected = registrations > 0 and server_connected(server)
            metrics.registered.set(1 if connected else 0)
            on_change(connected)
            await asyncio.sleep(REGISTRATION_POLL_S)
    finally:
        metrics.registered.set(0)
        on_change(False)


async def serve(runtime: Runtime, entrypoint: Entrypoint, prewarm: Prewarm | None = None) -> int:
    """Run until SIGTERM/SIGINT, then drain. Returns the process exit code."""
    from .endpoint import MetricsServer, make_app

    s = runtime.settings
    link = JobLinkServer(runtime.sessions, runtime.metrics) if s.job_executor == "process" else None
    server = build_server(runtime, entrypoint, await link.start() if link else None, prewarm)
    endpoint = MetricsServer(
        make_app(
            runtime.metrics,
            runtime.sessions,
            lambda: runtime.registered,
            token=s.secrets.sessions_token,
        ),
        s.bind_address,
        s.metrics_port,
    )
    await endpoint.start()
    if resume_enabled(s.config.failover) and s.secrets.resume_key is None:
        log.warning(
            "failover.resumeConversation is on but %s is not set: no conversation summary "
            "is kept (the operator sets it from the VoiceAgent's worker-keys Secret)",
            Env.RESUME_KEY,
        )
    log.info(
        "voicefleet worker starting",
        extra={
            "agent_name": s.config.agentName,
            "livekit_url": s.livekit_url,
            "pod_ip": s.pod_ip,
            "bind_address": s.bind_address,
            "metrics_port": endpoint.port,
            "health_port": s.health_port,
            "capacity": s.config.sessions.maxPerWorker,
            "job_executor": s.job_executor,
            "agent": s.agent_module or "voicefleet",
        },
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting at once", extra={"signal": sig.name})
            os._exit(1)
        log.info("signal received: draining", extra={"signal": sig.name})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    run_task = asyncio.create_task(server.run(devmode=False), name="agent_server")
    watch_task = asyncio.create_task(
        watch_registration(server, runtime.metrics, runtime.set_registered)
    )
    stop_task = asyncio.create_task(stop.wait())
    code = 0
    try:
        await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task.done():
            exc = run_task.exception()
            log.error("worker stopped: %s", exc or "the agent server returned")
            code = 1
        else:
            await drain(server, runtime)
    finally:
        stop_task.cancel()
        await server.aclose()
        watch_task.cancel()
        with suppress(asyncio.CancelledError):
            await watch_task
        if not run_task.done():
            run_task.cancel()
        with suppress(BaseException):
            await run_task
        await endpoint.aclose()
        if link is not None:
            await link.aclose()
        if runtime.tracer_provider is not None:
            with suppress(Exception):
                await asyncio.to_thread(runtime.tracer_provider.shutdown)
    log.info("voicefleet worker stopped", extra={"exit_code": code})
    return code


async def drain(server: AgentServer, runtime: Runtime) -> None:
    """No new jobs; live sessions finish; give up after drainTimeoutSeconds."""
    timeout = runtime.settings.config.sessions.drainTimeoutSeconds
    runtime.sessions.set_draining()
    log.info("draining", extra={"active_sessions": runtime.sessions.count(), "timeout": timeout})
    try:
        # livekit-agents treats a timeout of 0 as "no timeout"; 0 here means "do not wait"
        await asyncio.wait_for(server.drain(timeout=None), timeout=max(timeout, 0.001))
    except TimeoutError:
        cut = runtime.sessions.end_all("drain_timeout")
        log.warning("drain timed out", extra={"sessions_cut": cut})
    else:
        log.info("drained: no sessions left")
