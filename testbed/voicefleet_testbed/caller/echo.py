"""`EchoAgent`: the thinnest possible "agent", a baseline for what WebRTC itself costs.

A participant of kind AGENT written with the rtc SDK alone: it hears the caller's speech
end with the Realtime stand-in's own energy VAD (same threshold, same silence window),
waits a fixed delay, then plays a tone; it falls silent when the caller talks over it. A
caller's latency against it, minus the silence window and the delay, is transport
(caller -> LiveKit -> agent -> LiveKit -> caller) plus the caller's own measuring: what any
agent pays before doing any work of its own.

As a process (the callers' process then does not also carry the agents):

    LIVEKIT_URL=ws://... LIVEKIT_API_KEY=K LIVEKIT_API_SECRET=S \\
        python -m voicefleet_testbed.caller.echo --room-prefix echo-1 --count 10 \\
        --delay-ms 200 --silence-ms 300

joins rooms `<prefix>-0` .. `<prefix>-<count-1>`, prints `READY`, and leaves when its
stdin closes (or on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Coroutine
from typing import Any, Self

from livekit import api, rtc

from ..audio import Tone
from ..realtime.vad import EnergyVad
from .pump import AudioPump, microphone

RATE = 48000


class EchoAgent:
    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        room: str,
        delay_s: float,
        answer_s: float = 1.0,
        silence_ms: int = 300,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.api_secret = api_secret
        self.room_name = room
        self.delay_s = delay_s
        self.answer_s = answer_s
        self.silence_ms = silence_ms
        self.identity = f"echo-{uuid.uuid4().hex[:6]}"
        self.room = rtc.Room()
        self.interrupted = 0
        self.answers = 0
        self.vad_events: list[tuple[str, int]] = []
        self._heard: set[str] = set()
        self._pump: AudioPump | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._answer: asyncio.Task[None] | None = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> Self:
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(self.identity)
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=self.room_name))
            .to_jwt()
        )
        self.room.on("track_subscribed", self._on_track)
        await self.room.connect(self.url, token)
        source = microphone(RATE)
        track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self._pump = AudioPump(source)
        self._pump.start()
        for p in self.room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None:
                    self._on_track(pub.track, pub, p)
        return self

    def _on_track(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and track.sid not in self._heard:
            self._heard.add(track.sid)
            self._spawn(self._hear(track))

    async def _hear(self, track: rtc.Track) -> None:
        vad = EnergyVad(RATE, threshold_db=-40, min_speech_ms=60, silence_ms=self.silence_ms)
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            for v in vad.push(bytes(ev.frame.data)):
                self.vad_events.append((v.kind, v.audio_ms))
                if v.kind == "start":
                    if self._answer is not None:
                        self._answer.cancel()
                    assert self._pump is not None
                    if self._pump.stop():
                        self.interrupted += 1
                else:
                    self._answer = self._spawn(self._reply())

    async def _reply(self) -> None:
        await asyncio.sleep(self.delay_s)  # the agent's "thinking" time: the model delay
        assert self._pump is not None
        self.answers += 1
        self._pump.play(Tone(RATE, 440, 0.3).next, self.answer_s)

    async def stop(self) -> None:
        if self._pump is not None:
            await self._pump.aclose()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.room.disconnect()


async def serve(args: argparse.Namespace) -> None:
    agents = [
        EchoAgent(
            args.url,
            args.api_key,
            args.api_secret,
            f"{args.room_prefix}-{i}",
            args.delay_ms / 1000,
            args.answer_ms / 1000,
            args.silence_ms,
        )
        for i in range(args.count)
    ]
    await asyncio.gather(*(a.start() for a in agents))
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 1):  # EOF: the parent is done with us
            done.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    await done.wait()
    await asyncio.gather(*(a.stop() for a in agents))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m voicefleet_testbed.caller.echo")
    env = os.environ.get
    p.add_argument("--url", default=env("LIVEKIT_URL"), help="default $LIVEKIT_URL")
    p.add_argument("--api-key", default=env("LIVEKIT_API_KEY"), help="default $LIVEKIT_API_KEY")
    p.add_argument(
        "--api-secret", default=env("LIVEKIT_API_SECRET"), help="default $LIVEKIT_API_SECRET"
    )
    p.add_argument("--room-prefix", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--delay-ms", type=int, default=200)
    p.add_argument("--answer-ms", type=int, default=800)
    p.add_argument("--silence-ms", type=int, default=300)
    args = p.parse_args(argv)
    if not (args.url and args.api_key and args.api_secret):
        p.error("LiveKit URL, API key and secret are required (flags or LIVEKIT_* env)")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
