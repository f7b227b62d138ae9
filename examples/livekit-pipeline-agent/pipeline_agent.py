"""A voice pipeline with no OpenAI in it, written exactly as livekit-agents' own examples
write one: Deepgram speech-to-text, Anthropic's Claude, Cartesia text-to-speech and Silero
voice activity detection (loaded once per job process by `prewarm`). Nothing of voicefleet
in it. Runs by hand (`python pipeline_agent.py dev`) or, unchanged, in a voicefleet worker
image (`spec.agent.module: pipeline_agent`; see README.md beside it).

Each plugin reads its key from the environment: DEEPGRAM_API_KEY, ANTHROPIC_API_KEY,
CARTESIA_API_KEY.
"""

from __future__ import annotations

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.plugins import anthropic, cartesia, deepgram, silero

INSTRUCTIONS = (
    "You are a helpful voice assistant for a bicycle shop. Answer in one or two short "
    "sentences: your words are spoken, not read."
)


class Assistant(Agent):
    def __init__(self) -> None:
        super().__init__(instructions=INSTRUCTIONS)

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="Greet the caller and ask how you can help.")


def prewarm(proc: JobProcess) -> None:
    # once per job process, before its first call: the VAD model is loaded from the wheel
    proc.userdata["vad"] = silero.VAD.load()


server = AgentServer(setup_fnc=prewarm)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session = AgentSession(
        vad=ctx.proc.userdata["vad"],
        stt=deepgram.STT(model="nova-3"),
        llm=anthropic.LLM(model="claude-sonnet-4-6"),
        tts=cartesia.TTS(model="sonic-3"),
    )
    await session.start(agent=Assistant(), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
