"""The Realtime API stand-in, driven by the REAL livekit-plugins-openai client (no LiveKit).

Each test gets its own scenario on one in-process stand-in, pushes speech-like audio into
a plugin RealtimeSession and watches what the plugin surfaces: generations, audio frames,
function calls, reconnections. The stand-in's /stats show what reached it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import NOT_GIVEN, llm
from livekit.plugins import openai
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad

from voicefleet_testbed.audio import Voice, silence
from voicefleet_testbed.realtime import RealtimeStandIn, StandInClient

RATE = 48000  # what a LiveKit track delivers; the plugin resamples to 24 kHz


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[RealtimeStandIn]:
    async with RealtimeStandIn() as s:
        yield s


@dataclass
class Generation:
    audio_ms: float = 0.0
    text: str = ""
    calls: list[llm.FunctionCall] = field(default_factory=list)
    first_audio: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Harness:
    """A plugin session on its own scenario, with its generations collected."""

    def __init__(self, standin: RealtimeStandIn, **model_kw: Any) -> None:
        self.scenario = f"t-{uuid.uuid4().hex[:8]}"
        self.control = StandInClient(standin.url, self.scenario)
        model_kw.setdefault("turn_detection", ServerVad(type="server_vad", silence_duration_ms=300))
        self.model = openai.realtime.RealtimeModel(
            base_url=self.control.base_url, api_key="test", **model_kw
        )
        self.session = self.model.session()
        self.generations: asyncio.Queue[Generation] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self.reconnected = asyncio.Event()
        self.session.on("generation_created", self._on_generation)
        self.session.on("session_reconnected", lambda _: self.reconnected.set())
        self.transcripts: asyncio.Queue[llm.InputTranscriptionCompleted] = asyncio.Queue()
        self.session.on("input_audio_transcription_completed", self.transcripts.put_nowait)
        self.voice = Voice(RATE)

    def _on_generation(self, ev: llm.GenerationCreatedEvent) -> None:
        gen = Generation()
        self.generations.put_nowait(gen)
        task = asyncio.create_task(self._collect(ev, gen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _collect(self, ev: llm.GenerationCreatedEvent, gen: Generation) -> None:
        async def audio(stream: Any) -> None:
            async for frame in stream:
                gen.audio_ms += frame.duration * 1000
                gen.first_audio.set()

        async def text(stream: Any) -> None:
            async for delta in stream:
                gen.text += delta

        async def calls() -> None:
            async for call in ev.function_stream:
                gen.calls.append(call)

        async def messages() -> None:
            async for msg in ev.message_stream:
                await asyncio.gather(audio(msg.audio_stream), text(msg.text_stream))

        await asyncio.gather(messages(), calls())
        gen.done.set()

    def push(self, pcm: np.ndarray[Any, Any]) -> None:
        for i in range(0, len(pcm), RATE // 100):  # 10 ms frames, as from a track
            chunk = pcm[i : i + RATE // 100]
            self.session.push_audio(rtc.AudioFrame(chunk.tobytes(), RATE, 1, len(chunk)))

    def speak(self, seconds: float = 0.8) -> None:
        """A turn: voice, then silence long enough for the server VAD to end it."""
        self.push(self.voice.next(int(RATE * seconds)))
        self.push(silence(RATE, 500))

    async def next_generation(self, timeout: float = 10) -> Generation:
        return await asyncio.wait_for(self.generations.get(), timeout)

    async def close(self) -> None:
        await self.session.aclose()
        await self.model.aclose()
        for t in list(self._tasks):
            t.cancel()


@pytest.fixture
async def h(standin: RealtimeStandIn) -> AsyncIterator[Harness]:
    harness = Harness(standin)
    yield harness
    await harness.close()


async def test_turn_gets_a_spoken_answer(h: Harness) -> None:
    await h.control.configure(modelDelayMs=100, responseMs=600, audioPace=0)
    h.speak()
    gen = await h.next_generation()
    await asyncio.wait_for(gen.done.wait(), 10)
    assert gen.audio_ms == pytest.approx(600, abs=20)
    assert gen.text == "Hello from the voicefleet Realtime stand-in."
    stats = await h.control.wait_stats(lambda s: s["responses"]["completed"] == 1, 5)
    assert stats["speech"] == {"started": 1, "stopped": 1}
    assert stats["connections"] == {"total": 1, "current": 1}
    assert stats["sessions"] == 1
    td = stats["lastSessionConfig"]["audio"]["input"]["turn_detection"]
    assert td["type"] == "server_vad" and td["silence_duration_ms"] == 300


async def test_plugin_defaults_semantic_vad_and_user_transcript(standin: RealtimeStandIn) -> None:
    h = Harness(standin, turn_detection=NOT_GIVEN)  # the plugin's default: semantic_vad
    try:
        await h.control.configure(modelDelayMs=0, responseMs=200, audioPace=0)
        h.push(h.voice.next(RATE))
        h.push(silence(RATE, 700))  # 500 ms of quiet ends the turn when none is configured
        transcript = await asyncio.wait_for(h.transcripts.get(), 10)
        assert transcript.transcript == "(caller speech)" and transcript.is_final
        gen = await h.next_generation()
        await asyncio.wait_for(gen.done.wait(), 10)
        stats = await h.control.stats()
        td = stats["lastSessionConfig"]["audio"]["input"]["turn_detection"]
        assert td["type"] == "semantic_vad"
    finally:
        await h.close()


async def test_generate_reply_echoes_the_client_event_id(h: Harness) -> None:
    await h.control.configure(modelDelayMs=0, responseMs=200, audioPace=0)
    created = await asyncio.wait_for(h.session.generate_reply(), 10)
    assert created.user_initiated  # the plugin matched response.metadata.client_event_id
    gen = await h.next_generation()
    await asyncio.wait_for(gen.done.wait(), 10)
    assert gen.audio_ms > 0


async def test_speech_interrupts_a_response(h: Harness) -> None:
    await h.control.configure(modelDelayMs=50, responseMs=20_000)
    h.speak()
    gen = await h.next_generation()
    await asyncio.wait_for(gen.first_audio.wait(), 10)
    h.push(h.voice.next(int(RATE * 0.5)))  # the caller talks over the agent
    await asyncio.wait_for(gen.done.wait(), 10)
    assert gen.audio_ms < 20_000
    stats = await h.control.wait_stats(lambda s: s["interruptions"] == 1, 5)
    assert stats["responses"]["completed"] == 0
    # the interrupting turn ends and gets its own answer
    await h.control.configure(responseMs=300, audioPace=0)
    h.push(silence(RATE, 500))
    second = await h.next_generation()
    await asyncio.wait_for(second.done.wait(), 10)
    assert second.audio_ms == pytest.approx(300, abs=20)


async def test_client_cancel_ends_a_response(h: Harness) -> None:
    await h.control.configure(modelDelayMs=0, responseMs=20_000)
    h.speak()
    gen = await h.next_generation()
    await asyncio.wait_for(gen.first_audio.wait(), 10)
    h.session.interrupt()  # response.cancel
    await asyncio.wait_for(gen.done.wait(), 10)
    stats = await h.control.wait_stats(lambda s: s["responses"]["cancelled"] == 1, 5)
    assert stats["clientEvents"]["response.cancel"] == 1


async def test_function_call_round_trip(h: Harness) -> None:
    await h.control.configure(
        modelDelayMs=0,
        responseMs=300,
        audioPace=0,
        nextToolCall={"name": "lookup_order", "arguments": {"orderId": "42"}},
    )
    h.speak()
    gen = await h.next_generation()
    await asyncio.wait_for(gen.done.wait(), 10)
    assert gen.audio_ms == 0
    [call] = gen.calls
    assert call.name == "lookup_order"
    assert call.arguments == '{"orderId": "42"}'

    chat_ctx = h.session.chat_ctx.copy()
    chat_ctx.items.append(
        llm.FunctionCallOutput(
            call_id=call.call_id, name=call.name, output="order 42 shipped", is_error=False
        )
    )
    await h.session.update_chat_ctx(chat_ctx)  # conversation.item.create, confirmed
    await asyncio.wait_for(h.session.generate_reply(), 10)
    answer = await h.next_generation()
    await asyncio.wait_for(answer.done.wait(), 10)
    assert answer.audio_ms > 0
    assert "order 42 shipped" in answer.text
    stats = await h.control.stats()
    assert stats["functionOutputs"] == [
        {"callId": call.call_id, "name": "lookup_order", "output": "order 42 shipped"}
    ]
    assert [c["name"] for c in stats["functionCalls"]] == ["lookup_order"]


async def test_dropped_connection_reconnects_and_keeps_working(h: Harness) -> None:
    await h.control.configure(modelDelayMs=0, responseMs=200, audioPace=0)
    await h.control.wait_stats(lambda s: s["connections"]["current"] == 1, 10)
    await h.control.configure(dropNow=True)
    await asyncio.wait_for(h.reconnected.wait(), 10)
    stats = await h.control.wait_stats(lambda s: s["connections"]["current"] == 1, 10)
    assert stats["connections"]["total"] == 2
    assert stats["reconnects"] == 1 and stats["drops"] == 1
    assert stats["sessions"] == 2  # the plugin replayed its session.update
    h.speak()
    gen = await h.next_generation()
    await asyncio.wait_for(gen.done.wait(), 10)
    assert gen.audio_ms > 0


async def test_drop_mid_response_closes_the_generation_and_reconnects(h: Harness) -> None:
    await h.control.configure(modelDelayMs=0, responseMs=20_000, dropMidResponse=True)
    h.speak()
    gen = await h.next_generation()
    await asyncio.wait_for(gen.done.wait(), 10)  # the plugin closes it on reconnection
    await asyncio.wait_for(h.reconnected.wait(), 10)
    stats = await h.control.wait_stats(lambda s: s["reconnects"] == 1, 10)
    assert stats["settings"]["dropMidResponse"] is False  # one shot


async def test_error_event_reaches_the_plugin(h: Harness) -> None:
    errors: asyncio.Queue[llm.RealtimeModelError] = asyncio.Queue()
    h.session.on("error", errors.put_nowait)
    await h.control.wait_stats(lambda s: s["connections"]["current"] == 1, 10)
    await h.control.configure(errorNow={"type": "server_error", "code": "boom", "message": "x"})
    err = await asyncio.wait_for(errors.get(), 10)
    assert err.recoverable
    assert "boom" in str(getattr(err.error, "body", err.error))


async def test_scenarios_are_isolated(standin: RealtimeStandIn) -> None:
    a, b = StandInClient(standin.url, "iso-a"), StandInClient(standin.url, "iso-b")
    await a.configure(modelDelayMs=1234)
    assert (await b.stats())["settings"]["modelDelayMs"] == 200
    assert (await a.stats())["settings"]["modelDelayMs"] == 1234
    await a.reset()
    assert (await a.stats())["settings"]["modelDelayMs"] == 200


async def test_control_rejects_unknown_settings(standin: RealtimeStandIn) -> None:
    with pytest.raises(RuntimeError, match="unknown setting"):
        await StandInClient(standin.url, "bad").configure(modelDelay=1)


def test_cli_prints_its_url_and_stops_on_sigterm() -> None:
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "voicefleet_testbed.realtime", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("REALTIME_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        assert proc.stdout.readline().strip() == f"OPENAI_BASE_URL={url}/v1"
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            assert r.read() == b"ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
