"""A custom voicefleet agent: your own code, the fleet's runtime.

`voicefleet_worker.run(entrypoint)` gives this code what the stock worker has: the
VoiceAgent's configuration (agent.json + env), registration under its agent name,
session-based load (FULL at maxPerWorker), draining on SIGTERM, the health server,
Prometheus metrics and /sessions.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import RunContext, function_tool
from livekit.agents.voice import Agent

from voicefleet_worker import Job, run


class Concierge(Agent):
    def __init__(self, job: Job) -> None:
        super().__init__(
            # after a failover, job.resumed holds the previous agent's turns: these add
            # the "you were reconnected" sentence and the conversation so far (no-ops on
            # a new call)
            instructions=job.resume_instructions(
                job.config.model.instructions + " Always offer to check the opening hours."
            ),
            chat_ctx=job.resume_chat_ctx(),
            # the VoiceAgent's HTTP tools, plus the Python tool below
            tools=job.tools(),
        )

    @function_tool
    async def opening_hours(self, context: RunContext[Any], day: str) -> str:
        """Opening hours for a day of the week."""
        return "closed" if day.lower() == "sunday" else "9:00 to 18:00"


async def entrypoint(job: Job) -> None:
    # the configured Realtime model (model, voice, turn detection, ...), observed for
    # turn latency, interruptions and reconnections; keyword arguments override it
    session = job.agent_session()
    # session_host=False: otherwise livekit-agents hands any participant of the room the
    # chat history (a resumed call's earlier turns included) on request
    await session.start(agent=Concierge(job), room=job.ctx.room, session_host=False)
    # a resumed call gets "I'm back" and carries on; a new one gets a greeting
    if not job.greet_resumed(session):
        await session.generate_reply(instructions="Greet the caller.")


if __name__ == "__main__":
    run(entrypoint)
