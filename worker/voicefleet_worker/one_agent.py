"""Leaving a room that a later agent of the same name was dispatched to: the room-side half of
"exactly one agent per call" (the rule and why: voicefleet_contract.one_agent).

Checked when the agent has joined or re-joined the room, and whenever an agent joins or
its attributes change."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc
from livekit.agents import JobRequest

from voicefleet_contract.one_agent import (
    AGENT_NAME_ATTRIBUTE,
    AgentMark,
    accept_attributes,
    mark_of,
    outranks,
    yields_to,
)

log = logging.getLogger("voicefleet.worker.one_agent")


async def accept_marked(req: JobRequest) -> None:
    """livekit-agents' `on_request`: accept every job offered (the load LiveKit sees
    already keeps a full worker from being offered more), marked with the accept time."""
    await req.accept(attributes=accept_attributes(time.time()))


def agents_of(room: rtc.Room, agent_name: str) -> list[AgentMark]:
    """The marks of the other agents of `agent_name` in the room."""
    marks = []
    for p in room.remote_participants.values():
        if p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            continue
        if p.attributes.get(AGENT_NAME_ATTRIBUTE) != agent_name:
            continue
        mark = mark_of(p.identity, p.attributes)
        if mark is not None:
            marks.append(mark)
    return marks


class OneAgentGuard:
    """Calls `leave(identity of the agent that stays)` once, when this agent must go;
    while it stays, `remove(identity)` once for each earlier agent of its name."""

    def __init__(
        self,
        room: rtc.Room,
        agent_name: str,
        leave: Callable[[str], None],
        remove: Callable[[str], Awaitable[None]],
        extra: dict[str, Any],
    ) -> None:
        self.room, self.agent_name, self.extra = room, agent_name, extra
        self._leave, self._remove = leave, remove
        self.left = False
        self._removing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self) -> None:
        self.room.on("participant_connected", lambda _p: self.check())
        self.room.on("participant_attributes_changed", lambda _changed, _p: self.check())
        self.room.on("reconnected", self.check)
        # the first connect included: the agents already in the room come with it
        self.room.on("connection_state_changed", lambda _state: self.check())

    def check(self) -> bool:
        """True once this agent has to leave (and `leave` was called)."""
        if self.left:
            return True
        if not self.room.isconnected():
            return False
        me_p = self.room.local_participant
        me = mark_of(me_p.identity, me_p.attributes)
        if me is None:
            return False
        others = agents_of(self.room, self.agent_name)
        last = yields_to(me, others)
        if last is None:
            for earlier in outranks(me, others):
                self._start_removal(earlier.identity)
            return False
        self.left = True
        log.warning(
            "a later agent of this VoiceAgent was dispatched to the room: leaving it the call",
            extra={**self.extra, "staying": last.identity},
        )
        self._leave(last.identity)
        return True

    def _start_removal(self, identity: str) -> None:
        if identity in self._removing:
            return
        self._removing.add(identity)
        task = asyncio.get_running_loop().create_task(self._removal(identity))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _removal(self, identity: str) -> None:
        log.warning(
            "an earlier agent of this VoiceAgent is in the room: removing it",
            extra={**self.extra, "removing": identity},
        )
        try:
            await self._remove(identity)
        except Exception as e:  # it left by itself meanwhile (404), or LiveKit is away
            log.info(
                "could not remove the earlier agent (it may have left by itself)",
                extra={**self.extra, "removing": identity, "error": f"{type(e).__name__}"},
            )
