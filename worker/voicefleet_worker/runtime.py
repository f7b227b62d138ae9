"""The worker runtime: one `AgentServer` registered with LiveKit under the config's
agent name, jobs run by an entrypoint (the stock Realtime agent or custom code), and the
voicefleet additions around it: session-based load, the metrics endpoint, draining.

Jobs run in threads of the worker process (`VOICEFLEET_JOB_EXECUTOR=thread`, the stock
agent's default) or in livekit-agents' job processes (`process`, with its warm pool; the
default for an agent module of one's own). The worker process holds the one
`SessionRegistry` and metrics registry of the pod either way: a job thread uses them
directly, a job process through job_link.py. Each job sees a `JobRuntime`, set up once
per job process (or thread) by livekit-agents' setup hook and kept in `proc.userdata`.
The measured trade-off (CPU, memory per call, isolation) is in docs/worker.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

from livekit import api, rtc
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, llm
from livekit.agents.voice import Agent, AgentSession
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from voicefleet_contract import Env
from voicefleet_contract.capacity import full_threshold
from voicefleet_contract.config import AgentConfig
from voicefleet_contract.livekit_url import http_url

from .config import Settings
from .dial import dial
from .job_link import JobLinkServer, ParentLink, RemoteSessions, remote_metrics
from .lk_private import job_received_at, server_connected
from .load import idle_processes, session_load
from .metrics import WorkerMetrics
from .model import ObservedRealtimeModel, realtime_kwargs
from .observe import SessionObserver
from .one_agent import OneAgentGuard, accept_marked
from .resume import (
    RESUME_GREETING,
    RESUME_NOTE_ID,
    Binding,
    Summary,
    SummaryWriter,
    Turn,
    read_summary,
    resumable,
    resume_instructions,
    resume_note,
    seal,
    should_clear,
)
from .resume import (
    enabled as resume_enabled,
)
from .resume import ended_on_purpose as call_ended_on_purpose
from .sessions import JobEnd, SessionRegistry, SessionSink
from .tools import HEADER_JOB, HEADER_ROOM, make_tools
from .tracing import setup_tracing

log = logging.getLogger("voicefleet.worker")

REGISTRATION_POLL_S = 0.5
# livekit-agents' warm-up loads its local VAD and end-of-turn model (~250 MB) in every
# process without a multiprocessing parent, which includes a thread-executor worker. The
# Realtime model detects turns server-side, so the worker skips them (160 MB instead of
# 410 MB idle). A custom agent using the local turn detector can set the variable to 1.
PRELOAD_LOCAL_INFERENCE_ENV = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"


@dataclass(frozen=True)
class JobRuntime:
    """What every job of one job process (or thread) shares: the settings, the metrics
    and where sessions are reported (the worker process's registry, directly or through
    job_link), and the tracer."""

    settings: Settings
    metrics: WorkerMetrics
    sessions: SessionSink
    tracer: trace.Tracer | None = None
    # a job process's own spans, flushed at each job's end (None: nothing to flush)
    flush: Callable[[], object] | None = None


@dataclass
class Runtime:
    """The worker process's state: the one session registry and metrics of the pod."""

    settings: Settings
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    tracer_provider: TracerProvider | None = None
    sessions: SessionRegistry = field(init=False)
    tracer: trace.Tracer | None = field(init=False, default=None)
    registered: bool = field(init=False, default=False)  # with LiveKit, now: readiness

    def set_registered(self, value: bool) -> None:
        self.registered = value

    def __post_init__(self) -> None:
        if self.tracer_provider is not None:
            self.tracer = self.tracer_provider.get_tracer("voicefleet.worker")
        self.sessions = SessionRegistry(self.settings.config.sessions.maxPerWorker, self.metrics)
        for t in self.settings.config.tools:
            self.metrics.init_tool(t.name)

    def job_runtime(self) -> JobRuntime:
        """What a job thread uses: this process's own registry and metrics."""
        return JobRuntime(self.settings, self.metrics, self.sessions, self.tracer)


USERDATA_KEY: Final = "voicefleet"


Prewarm = Callable[[JobProcess], Any]


def setup_job_thread(job_runtime: JobRuntime, prewarm: Prewarm | None, proc: JobProcess) -> None:
    """livekit-agents' setup hook for a job thread; then the agent's own prewarm."""
    proc.userdata[USERDATA_KEY] = job_runtime
    if prewarm is not None:
        prewarm(proc)


def setup_job_process(
    settings: Settings, link_path: str, prewarm: Prewarm | None, proc: JobProcess
) -> None:
    """livekit-agents' setup hook in a new job process (pickled by reference, run once
    per process before its job): metrics and sessions go to the worker process. Then the
    agent's own prewarm (a custom agent's models, loaded once per process)."""
    link = ParentLink(link_path)
    provider = setup_tracing(settings)
    proc.userdata[USERDATA_KEY] = JobRuntime(
        settings,
        remote_metrics(link),
        RemoteSessions(link),
        provider.get_tracer("voicefleet.worker") if provider is not None else None,
        provider.force_flush if provider is not None else None,
    )
    if prewarm is not None:
        prewarm(proc)


class Job:
    """What an entrypoint gets for one session: the livekit `JobContext` plus the
    worker's configuration and ready-made, observed building blocks."""

    def __init__(
        self,
        ctx: JobContext,
        runtime: JobRuntime,
        observer: SessionObserver,
        resumed: tuple[Turn, ...] = (),
    ) -> None:
        self.ctx = ctx
        self.runtime = runtime
        self.observer = observer
        self.resumed = resumed
        """The turns a previous agent left in the room (a re-dispatch after failover, with
        `failover.resumeConversation`); empty for a new call. `agent()` starts from them."""

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def config(self) -> AgentConfig:
        return self.runtime.settings.config

    async def dial(self, number: str, *, wait_until_answered: bool = False) -> Any:
        """Call a phone number into this job's room through the VoiceAgent's outbound trunk
        (spec.telephony.outbound; docs/telephony.md). Returns LiveKit's SIPParticipantInfo."""
        s = self.settings
        async with api.LiveKitAPI(
            s.livekit_url, s.secrets.livekit_api_key, s.secrets.livekit_api_secret
        ) as client:
            return await dial(
                client, s.config.namespace, s.config.voiceAgent, self.ctx.room.name, number,
                wait_until_answered=wait_until_answered,
            )  # fmt: skip

    def realtime_model(self, **overrides: Any) -> ObservedRealtimeModel:
        """The configured `openai.realtime.RealtimeModel`; `overrides` win over the config."""
        s = self.settings
        kw = realtime_kwargs(
            s.config.model, api_key=s.secrets.openai_api_key, base_url=s.openai_base_url
        )
        kw.update(overrides)
        return ObservedRealtimeModel(on_session=self.observer.attach_realtime, **kw)

    def tools(self) -> list[llm.RawFunctionTool[..., Any]]:
        """The configured HTTP tools as function tools (calls are counted and timed)."""

        def headers() -> Mapping[str, str]:
            return {HEADER_ROOM: self.ctx.job.room.name, HEADER_JOB: self.ctx.job.id}

        return make_tools(self.settings.config.tools, self.runtime.metrics, headers)

    def observe(self, session: AgentSession[Any]) -> AgentSession[Any]:
        """Hook a session into the worker's metrics (turn latency, interruptions,
        readiness, outcome). `agent_session()` does this already."""
        self.observer.attach_session(session)
        return session

    def agent_session(self, **kwargs: Any) -> AgentSession[Any]:
        """An observed `AgentSession` on the configured Realtime model."""
        kwargs.setdefault("llm", self.realtime_model())
        return self.observe(AgentSession(**kwargs))

    def agent(self, **kwargs: Any) -> Agent:
        """An `Agent` with the configured instructions and tools (kwargs win). A resumed
        session's agent also starts from the previous agent's turns: a system note in its
        chat context, and instructions to continue rather than greet."""
        kwargs["instructions"] = self.resume_instructions(
            kwargs.get("instructions", self.config.model.instructions)
        )
        if self.resumed:
            kwargs.setdefault("chat_ctx", self.resume_chat_ctx())
        kwargs.setdefault("tools", self.tools())
        return Agent(**kwargs)

    def resume_instructions(self, instructions: str) -> str:
        """`instructions` plus, on a resumed session, the sentence telling the model it was
        just reconnected and should continue rather than greet."""
        return resume_instructions(instructions) if self.resumed else instructions

    def resume_chat_ctx(self) -> llm.ChatContext:
        """A chat context holding the previous agent's turns as one system note (empty
        for a new call). One note rather than replayed assistant messages: a Realtime
        model shown its own turns as text tends to answer in text."""
        ctx = llm.ChatContext.empty()
        if self.resumed:
            ctx.add_message(role="system", content=resume_note(self.resumed), id=RESUME_NOTE_ID)
        return ctx

    def greet_resumed(self, session: AgentSession[Any]) -> bool:
        """On a resumed session, have the agent say it is back and carry on (instead of a
        fresh greeting); True when it did. Call after `session.start()`."""
        if not self.resumed:
            return False
        session.generate_reply(instructions=RESUME_GREETING)
        return True


Entrypoint = Callable[[Job], Awaitable[None]]


async def realtime_agent(job: Job) -> None:
    """The stock entrypoint: the CR-configured Realtime agent.

    `session_host=False`: livekit-agents 1.8.9 otherwise answers any participant of the
    room (over the `lk.agent.session` byte stream) with the whole chat history, the
    agent's instructions and chat context (a resumed call's earlier turns included), lets
    it inject user input, and broadcasts every conversation item to everyone in the room.
    A caller's app gets live captions through the transcription stream as before."""
    session = job.agent_session()
    await session.start(agent=job.agent(), room=job.ctx.room, session_host=False)
    job.greet_resumed(session)


SESSION_POLL_S: Final = 0.05


async def livekit_entrypoint(entrypoint: Callable[[JobContext], Awaitable[None]], job: Job) -> None:
    """A livekit-agents entrypoint (`JobContext` in, as in livekit-agents' examples) run as
    a voicefleet job: the `AgentSession` it starts is observed for the worker's metrics
    as soon as it is the job's primary session (livekit-agents offers no event for that,
    hence the short poll, which ends with the session or the job)."""

    async def observe_when_started() -> None:
        while True:
            with suppress(RuntimeError):
                job.observe(job.ctx.primary_session)
                return
            await asyncio.sleep(SESSION_POLL_S)

    watcher = asyncio.create_task(observe_when_started())

    async def stop_watching(_: str) -> None:
        watcher.cancel()

    job.ctx.add_shutdown_callback(stop_watching)
    await entrypoint(job.ctx)


async def run_job(entrypoint: Entrypoint, ctx: JobContext) -> None:
    """One job, in whichever executor runs it: the session's bookkeeping, metrics,
    one-agent guard and resume around `entrypoint(job)`. Module-level so that
    `functools.partial(run_job, entrypoint)` pickles into a job process."""
    runtime: JobRuntime = ctx.proc.userdata[USERDATA_KEY]
    settings = runtime.settings
    job_id, room = ctx.job.id, ctx.job.room.name
    identity = ""
    with suppress(Exception):
        identity = ctx.local_participant_identity
    runtime.sessions.start(job_id, room, identity)
    span = runtime.tracer.start_span("voicefleet.session") if runtime.tracer else None
    if span is not None:
        span.set_attributes({"lk.job_id": job_id, "lk.room_name": room})

    def span_end(outcome: str) -> None:
        if span is not None:
            span.set_attribute("voicefleet.outcome", outcome)
            span.end()

    # The room stays in /sessions until the agent has left it (see JobEnd).
    ending = JobEnd(runtime.sessions, job_id, span_end)

    def on_close(outcome: str) -> None:
        ending.closing(outcome)
        ctx.shutdown(reason=f"session closed ({outcome})")

    observer = SessionObserver(
        metrics=runtime.metrics,
        job_id=job_id,
        room=room,
        log_transcripts=settings.config.observability.logTranscripts,
        received_at=job_received_at(ctx),
        on_ready=lambda: runtime.sessions.joined(job_id),
        on_close=on_close,
    )
    observer.attach_room(ctx.room)
    # Another agent of this VoiceAgent dispatched here later: this one leaves.
    OneAgentGuard(
        ctx.room,
        settings.config.agentName,
        lambda _: on_close("duplicate"),
        lambda identity: remove_participant(settings, room, identity),
        {"job_id": job_id, "room": room},
    ).attach()
    resumed, writer = await _resume(
        ctx,
        runtime,
        job_id,
        observer,
        handed_over=lambda: ending.outcome == "duplicate" or observer.removed,
    )
    if writer is not None:
        observer.on_turn = writer.add

    async def on_shutdown(reason: str) -> None:
        # livekit-agents runs shutdown callbacks after disconnecting from the room
        ending.left()
        if runtime.flush is not None:  # a job process may exit next
            await asyncio.to_thread(runtime.flush)

    ctx.add_shutdown_callback(on_shutdown)
    log.info(
        "session starting",
        # pid: which job process (or the worker process, for a job thread) runs the call
        extra={"job_id": job_id, "room": room, "resumed_turns": len(resumed), "pid": os.getpid()},
    )
    try:
        await entrypoint(Job(ctx, runtime, observer, resumed))
    except Exception:
        log.exception("session entrypoint failed", extra={"job_id": job_id, "room": room})
        ending.closing("error")
        ctx.shutdown(reason="entrypoint failed")


class RoomMetadataSink:
    """The room's metadata and participants through the LiveKit API, with the worker's
    credentials (one API client per job, made on the job's event loop on first use)."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        self._url, self._key, self._secret = http_url(url), api_key, api_secret
        self._api: api.LiveKitAPI | None = None

    def _client(self) -> api.LiveKitAPI:
        if self._api is None:
            self._api = api.LiveKitAPI(self._url, self._key, self._secret)
        return self._api

    async def __call__(self, room: str, metadata: str) -> None:
        await self._client().room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room=room, metadata=metadata)
        )

    async def read(self, room: str) -> str | None:
        rooms = await self._client().room.list_rooms(api.ListRoomsRequest(names=[room]))
        return str(rooms.rooms[0].metadata) if rooms.rooms else None

    async def callers(self, room: str) -> set[str]:
        """The participant SIDs of everyone in the room but agents."""
        got = await self._client().room.list_participants(api.ListParticipantsRequest(room=room))
        agent = api.ParticipantInfo.Kind.AGENT
        return {p.sid for p in got.participants if p.kind != agent}

    async def aclose(self) -> None:
        if self._api is not None:
            with suppress(Exception):
                await self._api.aclose()


async def remove_participant(s: Settings, room: str, identity: str) -> None:
    """RemoveParticipant with the worker's credentials (rare: one short-lived client)."""
    async with api.LiveKitAPI(
        http_url(s.livekit_url), s.secrets.livekit_api_key, s.secrets.livekit_api_secret
    ) as lk:
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=identity))


def _callers_now(ctx: JobContext) -> set[str]:
    """The participant SIDs of the callers (everyone but agents) this agent sees now."""
    agent = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    return {p.sid for p in ctx.room.remote_participants.values() if p.kind != agent and p.sid}


async def _resume(
    ctx: JobContext,
    runtime: JobRuntime,
    job_id: str,
    observer: SessionObserver,
    handed_over: Callable[[], bool] = lambda: False,
) -> tuple[tuple[Turn, ...], SummaryWriter | None]:
    """What a session needs for failover resume: the turns a previous agent of the same
    call left in the room (read from the room as dispatched, opened with the resume key,
    and only when one of the callers it was written for is still in the room), and the
    writer that keeps this session's own summary there, removed when the session ends
    (see `should_clear`). Both off without `failover.resumeConversation` (or with 0
    turns) or without a resume key."""
    s = runtime.settings
    fo = s.config.failover
    key = s.secrets.resume_key
    if not resume_enabled(fo) or key is None:
        return (), None
    room = ctx.job.room.name
    binding = Binding(room, ctx.job.room.sid)
    extra = {"job_id": job_id, "room": room}
    sink = RoomMetadataSink(s.livekit_url, s.secrets.livekit_api_key, s.secrets.livekit_api_secret)
    found = read_summary(ctx.job.room.metadata, key, binding, fo.summaryTurns)
    resumed: tuple[Turn, ...] = ()
    if found is not None and found.turns:
        try:
            resumed = resumable(found, await sink.callers(room))
        except Exception as e:  # no resume rather than a session that does not start
            log.warning(
                "could not list the room's participants: not resuming",
                extra={**extra, "error": f"{type(e).__name__}: {str(e)[:200]}"},
            )
        if resumed:
            runtime.metrics.sessions_resumed.inc()
            log.info(
                "resuming the conversation a previous agent left",
                extra={**extra, "turns": len(resumed)},
            )
        else:
            log.info("a summary of another call is in the room: not resuming", extra=extra)
    callers: set[str] = set(found.callers) if resumed and found is not None else set()

    def current() -> str:
        if ctx.room.isconnected():
            return ctx.room.metadata or ""
        return ctx.job.room.metadata or ""

    def sealed(turns: Sequence[Turn]) -> dict[str, Any]:
        # the callers of this call so far: a caller who rejoined keeps it resumable
        callers.update(_callers_now(ctx))
        return seal(key, binding, Summary(tuple(turns), job_id, frozenset(callers), time.time()))

    def on_result(ok: bool) -> None:
        runtime.metrics.summary_writes.labels(result="ok" if ok else "error").inc()

    writer = SummaryWriter(
        room=room,
        keep=fo.summaryTurns,
        sink=sink,
        current_metadata=current,
        seal=sealed,
        on_result=on_result,
        initial=resumed,
        extra=extra,
    )

    async def callers_present() -> bool | None:
        try:
            return bool(callers & await sink.callers(room))
        except Exception:
            return None  # unknown: kept (the room's end removes it anyway)

    async def close() -> None:
        # livekit-agents runs this after the agent left the room
        try:
            await writer.aclose()  # a pending write finishes first
            reason, handed = observer.close_reason, handed_over()
            asked = not (handed or call_ended_on_purpose(reason))
            present = await callers_present() if asked else None
            if not should_clear(reason, present, handed):
                log.info("conversation summary kept: the call goes on", extra=extra)
            elif await writer.clear():
                log.info("conversation summary removed: the call is over", extra=extra)
        finally:
            await sink.aclose()

    ctx.add_shutdown_callback(close)
    return resumed, writer


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
