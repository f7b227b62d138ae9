"""One job, in whichever executor runs it: the session's bookkeeping (/sessions, load),
metrics and tracing, the one-agent guard and failover resume around an entrypoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import suppress

from livekit.agents import JobContext

from .job_runtime import USERDATA_KEY, JobRuntime
from .lk_private import job_received_at
from .observe import SessionObserver
from .one_agent import OneAgentGuard
from .room_resume import remove_participant, start_resume
from .sdk import Entrypoint, Job
from .sessions import JobEnd

log = logging.getLogger("voicefleet.worker")


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
    resumed, writer = await start_resume(
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
