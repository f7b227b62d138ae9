"""An agent written exactly as livekit-agents' own examples write one: nothing of voicefleet
in it. Runs by hand (`python livekit_agent.py dev`) or, unchanged, in a voicefleet worker
image (`VOICEFLEET_AGENT=livekit_agent`; see README.md beside it).
"""

from __future__ import annotations

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.plugins import openai


class Assistant(Agent):
    def __init__(self, greeting: str) -> None:
        super().__init__(instructions=f"You are a helpful voice assistant. Start with: {greeting}")


def prewarm(proc: JobProcess) -> None:
    # once per job process, before its job: what every call would otherwise load itself
    proc.userdata["greeting"] = "Hello, this is the example agent."


server = AgentServer(setup_fnc=prewarm)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    # OPENAI_API_KEY and OPENAI_BASE_URL come from the environment, as the plugin reads them
    session = AgentSession(llm=openai.realtime.RealtimeModel(voice="alloy"))
    await session.start(agent=Assistant(ctx.proc.userdata["greeting"]), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
