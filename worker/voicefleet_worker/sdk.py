"""The public SDK of a voicefleet job: `Job` (what an entrypoint gets for one session),
the stock Realtime entrypoint, and the adapter that runs a livekit-agents entrypoint
(`JobContext` in) as a voicefleet job. `from voicefleet_worker import Job, run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any, Final

from livekit import api
from livekit.agents import JobContext, llm
from livekit.agents.voice import Agent, AgentSession

from voicefleet_contract.config import AgentConfig

from .config import Settings
from .dial import dial
from .job_runtime import JobRuntime
from .model import ObservedRealtimeModel, realtime_kwargs
from .observe import SessionObserver
from .resume import (
    RESUME_GREETING,
    RESUME_NOTE_ID,
    Turn,
    resume_instructions,
    resume_note,
)
from .tools import HEADER_JOB, HEADER_ROOM, make_tools


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
