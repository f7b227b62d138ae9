"""Failover resume in a job's room: the previous agent's turns read from the room's
metadata, this session's own summary kept there (the sealing and the decisions are in
resume.py; this module is their LiveKit side).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from livekit import api, rtc
from livekit.agents import JobContext

from voicefleet_contract.livekit_url import http_url

from .config import Settings
from .job_runtime import JobRuntime
from .observe import SessionObserver
from .resume import (
    Binding,
    Summary,
    SummaryWriter,
    Turn,
    read_summary,
    resumable,
    seal,
    should_clear,
)
from .resume import (
    enabled as resume_enabled,
)
from .resume import ended_on_purpose as call_ended_on_purpose

log = logging.getLogger("voicefleet.worker")


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


async def start_resume(
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
