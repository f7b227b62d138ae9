"""The stack runs the Realtime stand-in as a process and exports OPENAI_BASE_URL; the real
plugin client gets an answer from it through a scenario of its own."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from livekit import rtc
from livekit.agents import llm
from livekit.plugins import openai

from voicefleet_testbed.audio import Voice, silence
from voicefleet_testbed.realtime import StandInClient
from voicefleet_testbed.stack import Stack

pytestmark = pytest.mark.livekit  # needs the stack


async def test_stack_serves_the_standin(stack: Stack) -> None:
    assert f'export OPENAI_BASE_URL="{stack.openai_base_url()}"' in (stack.dir / "env").read_text()
    scenario = f"stack-{uuid.uuid4().hex[:6]}"
    control = StandInClient(stack.realtime_url, scenario)
    await control.configure(modelDelayMs=0, responseMs=300, audioPace=0)
    model = openai.realtime.RealtimeModel(base_url=stack.openai_base_url(scenario), api_key="x")
    session = model.session()
    generations: asyncio.Queue[llm.GenerationCreatedEvent] = asyncio.Queue()
    session.on("generation_created", generations.put_nowait)
    try:
        voice = Voice(24000)
        for pcm in (voice.next(24000), silence(24000, 800)):
            session.push_audio(rtc.AudioFrame(pcm.tobytes(), 24000, 1, len(pcm)))
        gen = await asyncio.wait_for(generations.get(), 10)
        frames = 0
        async for msg in gen.message_stream:
            async for _ in msg.audio_stream:
                frames += 1
        assert frames > 0
        stats = await control.stats()
        assert stats["responses"]["completed"] == 1 and stats["connections"]["total"] == 1
    finally:
        await session.aclose()
        await model.aclose()
