"""`Caller`: one simulated person on a call with a voice agent, over real WebRTC.

    caller = Caller(url, api_key, api_secret, room="call-1", agent_name="support")
    await caller.connect()                        # joins; the token dispatches the agent
    await caller.wait_agent(timeout=15)           # an agent participant is in the room
    end = await caller.speak_turn(1.0)            # 1 s of speech-like audio, then silence
    latency = await caller.wait_agent_audio(10)   # end of speech -> first agent audio (s)
    await caller.wait_agent_quiet(10)             # the answer is over
    stopped = await caller.interrupt()            # talk over the agent; did it stop?
    print(caller.report.to_dict())
    await caller.close()

Dispatch: `dispatch="token"` puts `RoomConfiguration(agents=[RoomAgentDispatch(...)])` in
the join token (LiveKit dispatches when the room is created), `dispatch="api"` calls
`CreateDispatch` after joining, `dispatch="none"` leaves it to someone else.

The agent is the first remote participant of kind AGENT (or with `agent_identity`). Its
audio is metered by energy; a participant leaving and another agent joining is a
failover, an agent gone for longer than `drop_window_s` is a dropped call.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine
from typing import Any, Literal

from livekit import api, rtc

from voicefleet_contract.livekit_url import http_url

from ..audio import Voice
from .meter import Changes, Meter
from .pump import AudioPump, microphone
from .report import CallReport, TurnResult

RATE = 48000


ParticipantKind = Literal["standard", "egress", "ingress", "sip", "agent"]


class Caller:
    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        room: str,
        agent_name: str | None = None,
        *,
        identity: str | None = None,
        dispatch: str = "token",
        metadata: str = "",
        agent_identity: str | None = None,
        kind: ParticipantKind | None = None,
        threshold_db: float = -45.0,
        drop_window_s: float = 10.0,
    ) -> None:
        if dispatch not in ("token", "api", "none"):
            raise ValueError("dispatch must be token, api or none")
        self.url = url
        self.api_key = api_key
        self.api_secret = api_secret
        self.room_name = room
        self.agent_name = agent_name
        self.identity = identity or f"caller-{uuid.uuid4().hex[:6]}"
        self.dispatch = dispatch
        self.metadata = metadata
        self.agent_identity = agent_identity
        self.kind = kind  # the participant kind the token claims ("sip": as LiveKit's SIP bridge)
        self.drop_window_s = drop_window_s
        self.report = CallReport(room, self.identity, agent_name)
        self.changes = Changes()
        self.meter = Meter(self.changes, threshold_db)
        self.room = rtc.Room()
        self.voice = Voice(RATE)
        self.agents: set[str] = set()  # identities of agent participants present
        self._pump: AudioPump | None = None
        self._joined_at = 0.0
        self._left_at: float | None = None
        self._overlap_since: float | None = None  # two or more agents in the room since
        self._tasks: set[asyncio.Task[None]] = set()
        self._speech_end: float | None = None
        self._turn: TurnResult | None = None
        self._heard: set[str] = set()  # agent audio tracks being metered

    # --- tokens and dispatch ---------------------------------------------------------------
    def token(self) -> str:
        grants = api.VideoGrants(room_join=True, room=self.room_name)
        t = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(self.identity)
            .with_name(self.identity)
            .with_grants(grants)
        )
        if self.kind is not None:
            t = t.with_kind(self.kind)
        if self.dispatch == "token" and self.agent_name:
            t = t.with_room_config(
                api.RoomConfiguration(
                    agents=[
                        api.RoomAgentDispatch(agent_name=self.agent_name, metadata=self.metadata)
                    ]
                )
            )
        return t.to_jwt()

    async def create_dispatch(self) -> str:
        """An explicit dispatch of `agent_name` to this room (CreateDispatch); its id."""
        assert self.agent_name
        async with api.LiveKitAPI(http_url(self.url), self.api_key, self.api_secret) as lk:
            d = await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=self.agent_name, room=self.room_name, metadata=self.metadata
                )
            )
            return str(d.id)

    # --- lifecycle -------------------------------------------------------------------------
    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.room.on("participant_connected", self._on_participant_connected)
        self.room.on("participant_disconnected", self._on_participant_disconnected)
        self.room.on("track_subscribed", self._on_track_subscribed)
        self._joined_at = loop.time()
        await self.room.connect(self.url, self.token(), rtc.RoomOptions(auto_subscribe=True))
        self.report.connected = True
        for p in self.room.remote_participants.values():
            self._on_participant_connected(p)
            for pub in p.track_publications.values():
                if pub.track is not None:
                    self._on_track_subscribed(pub.track, pub, p)
        source = microphone(RATE)
        track = rtc.LocalAudioTrack.create_audio_track("caller-mic", source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, opts)
        self._pump = AudioPump(source)
        self._pump.start()
        self._spawn(self._ticker())
        if self.dispatch == "api" and self.agent_name:
            await self.create_dispatch()

    async def close(self) -> None:
        self._check_dropped(final=True)
        if self._pump is not None:
            await self._pump.aclose()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.room.disconnect()

    async def __aenter__(self) -> Caller:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- room events -----------------------------------------------------------------------
    def _is_agent(self, p: rtc.RemoteParticipant) -> bool:
        if self.agent_identity is not None:
            return bool(p.identity == self.agent_identity)
        return bool(p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)

    def _on_participant_connected(self, p: rtc.RemoteParticipant) -> None:
        if not self._is_agent(p) or p.identity in self.agents:
            return
        now = asyncio.get_running_loop().time()
        self.agents.add(p.identity)
        if len(self.agents) == 2:
            self._overlap_since = now
        self.report.agent_joins += 1
        self.report.max_agents = max(self.report.max_agents, len(self.agents))
        if self.report.dispatch_s is None:
            self.report.dispatch_s = now - self._joined_at
        if self._left_at is not None:
            self.report.failover_gaps_s.append(now - self._left_at)
            self._left_at = None
        self.changes.bump()

    def _on_participant_disconnected(self, p: rtc.RemoteParticipant) -> None:
        if p.identity not in self.agents:
            return
        self.agents.discard(p.identity)
        if len(self.agents) == 1:
            self.overlap_s(end=True)
        self.report.agent_leaves += 1
        if not self.agents:
            self._left_at = asyncio.get_running_loop().time()
        self.changes.bump()

    def overlap_s(self, end: bool = False) -> float:
        """How long two or more agents have been in the room together now (0: not now);
        `end`: the overlap is over, recorded in `report.longest_overlap_s`."""
        if self._overlap_since is None:
            return 0.0
        took = asyncio.get_running_loop().time() - self._overlap_since
        if end:
            self._overlap_since = None
            self.report.longest_overlap_s = max(self.report.longest_overlap_s, took)
        return took

    def _on_track_subscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        # the event and connect() may both report a track: meter it once
        audio = track.kind == rtc.TrackKind.KIND_AUDIO
        if audio and self._is_agent(p) and track.sid not in self._heard:
            self._heard.add(track.sid)
            self._spawn(self._listen(track))
            self.changes.bump()

    async def _listen(self, track: rtc.Track) -> None:
        loop = asyncio.get_running_loop()
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        try:
            async for ev in stream:
                now = loop.time()
                self.meter.feed(ev.frame.data, ev.frame.duration, now)
                if self.report.first_audio_s is None and self.meter.onsets:
                    self.report.first_audio_s = self.meter.onsets[0] - self._joined_at
        finally:
            await stream.aclose()

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)  # notices silence when no frames arrive
            self.meter.tick(loop.time())
            self._check_dropped()

    def _check_dropped(self, final: bool = False) -> None:
        """Dropped: an agent left and none came back within the window (or before hang-up)."""
        if self._left_at is None or self.report.dropped:
            return
        if final or asyncio.get_running_loop().time() - self._left_at >= self.drop_window_s:
            self.report.dropped = True
            self.changes.bump()

    @property
    def hears_agent(self) -> bool:
        """An agent's audio track is subscribed and metered."""
        return bool(self._heard)

    # --- the conversation ------------------------------------------------------------------
    async def wait_agent(self, timeout: float) -> bool:
        """Until an agent participant is in the room."""
        return await self.changes.wait_for(lambda: bool(self.agents), timeout)

    async def speak_turn(self, seconds: float = 1.0) -> float:
        """Speak for `seconds`, then fall silent; returns when the speech has played out
        (loop time), which is where the turn's latency is measured from."""
        assert self._pump is not None, "connect() first"
        self._turn = TurnResult(len(self.report.turns), seconds)
        self.report.turns.append(self._turn)
        end = await self._pump.play(self.voice.next, seconds)
        self._speech_end = self._turn.spoke_until = end
        return end

    async def wait_agent_audio(self, timeout: float) -> float | None:
        """Seconds from the end of the last turn's speech to the first agent audio after
        it, or None when none comes within `timeout` (the turn went unanswered)."""
        assert self._speech_end is not None, "speak_turn() first"
        start = self._speech_end
        await self.changes.wait_for(lambda: self.meter.onset_after(start) is not None, timeout)
        onset = self.meter.onset_after(start)
        latency = None if onset is None else onset - start
        if self._turn is not None:
            self._turn.latency_s = latency
        return latency

    async def wait_agent_quiet(self, timeout: float) -> bool:
        """Until the agent's current answer is over; records how long it lasted."""
        ok = await self.changes.wait_for(lambda: not self.meter.talking, timeout)
        turn = self._turn
        if ok and turn is not None and turn.latency_s is not None and self._speech_end:
            onset = self._speech_end + turn.latency_s
            offset = self.meter.offset_after(onset)
            if offset is not None:
                turn.answer_s = offset - onset
        return ok

    async def interrupt(
        self, seconds: float = 0.8, timeout: float = 5.0, wait_talking: float = 10.0
    ) -> float | None:
        """Talk over the agent (waiting up to `wait_talking` for it to be talking); returns
        seconds from the start of the interruption to the agent's audio stopping, or None
        if it kept talking for `timeout`. The interruption is a new turn."""
        assert self._pump is not None, "connect() first"
        if not await self.changes.wait_for(lambda: self.meter.talking, wait_talking):
            raise RuntimeError("the agent is not talking: nothing to interrupt")
        start = asyncio.get_running_loop().time()
        turn = TurnResult(len(self.report.turns), seconds, interrupted=True)
        self.report.turns.append(turn)
        self._turn = turn
        done = self._pump.play(self.voice.next, seconds)
        stopped = await self.changes.wait_for(
            lambda: self.meter.offset_after(start) is not None, timeout
        )
        offset = self.meter.offset_after(start)
        turn.stopped_s = offset - start if stopped and offset is not None else None
        self._speech_end = await done
        return turn.stopped_s

    async def turn(self, seconds: float = 1.0, timeout: float = 15.0) -> TurnResult:
        """One full exchange: speak, hear the answer begin, wait for it to end."""
        await self.speak_turn(seconds)
        if await self.wait_agent_audio(timeout) is not None:
            await self.wait_agent_quiet(timeout + 30)
        assert self._turn is not None
        return self._turn
