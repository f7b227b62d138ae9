"""End to end: real LiveKit, real WebRTC callers, worker processes, the Realtime stand-in
(the one double). Each test names its own agent and stand-in scenario, so workers of
other tests are never dispatched to its rooms."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from livekit import api, rtc
from livekit.protocol.agent_pb import agent_session as agent_pb

from voicefleet_contract import JOB_EXECUTORS, Env
from voicefleet_contract.capacity import DEFAULT_TARGET_LOAD, float32
from voicefleet_contract.livekit_url import http_url
from voicefleet_contract.metrics import WORKER_METRICS
from voicefleet_contract.sessions import SessionsReport
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.realtime import StandInClient
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack
from voicefleet_worker.resume import Binding, Turn, parse_key, read_summary

from .proc import WorkerProc, worker_proc
from .test_integration import livekit_env
from .util import RESUME_KEY, agent_config

pytestmark = [pytest.mark.livekit, pytest.mark.slow]

MODEL_DELAY_MS = 200
SILENCE_MS = 300


async def until(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check()` (sync) until truthy; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class ToolEndpoint:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.url = ""


@pytest.fixture(scope="module")
async def tool_endpoint() -> AsyncIterator[ToolEndpoint]:
    ep = ToolEndpoint()

    async def lookup(req: web.Request) -> web.Response:
        body = await req.json()
        ep.calls.append({"args": body, "room": req.headers.get("X-Voicefleet-Room")})
        return web.json_response({"status": "shipped", "orderId": body.get("orderId")})

    app = web.Application()
    app.router.add_post("/lookup", lookup)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    ep.url = f"http://127.0.0.1:{runner.addresses[0][1]}/lookup"
    yield ep
    await runner.cleanup()


class Agent:
    """One agent name, its stand-in scenario and its worker processes."""

    def __init__(
        self,
        stack: Stack,
        directory: Path,
        tool_url: str,
        max_per_worker: int,
        executor: str | None = None,  # VOICEFLEET_JOB_EXECUTOR; None: the worker's default
    ) -> None:
        self.stack = stack
        self.executor = executor
        self.dir = directory
        self.name = f"e2e-{uuid.uuid4().hex[:6]}"
        self.standin = StandInClient(stack.realtime_url, scenario=self.name)
        self.config = agent_config(
            agentName=self.name,
            livekitURL=stack.livekit_url,
            model={
                "instructions": "You are a test agent.",
                "turnDetection": {"type": "server_vad", "silenceDurationMs": SILENCE_MS},
            },
            tools=[
                {
                    "name": "lookup_order",
                    "description": "Look up an order by id",
                    "parameters": {
                        "type": "object",
                        "properties": {"orderId": {"type": "string"}},
                        "required": ["orderId"],
                    },
                    "url": tool_url,
                    "timeoutSeconds": 5,
                }
            ],
            sessions={"maxPerWorker": max_per_worker, "drainTimeoutSeconds": 120},
        )
        self.workers: list[WorkerProc] = []

    def worker(self) -> WorkerProc:
        w = worker_proc(
            self.dir / f"w{len(self.workers)}",
            self.config,
            livekit_env(self.stack),
            OPENAI_BASE_URL=self.standin.base_url,
            **({Env.JOB_EXECUTOR: self.executor} if self.executor else {}),
        )
        self.workers.append(w)
        w.start()
        return w

    def caller(self, room: str | None = None) -> Caller:
        return Caller(
            self.stack.livekit_url,
            LIVEKIT_KEY,
            self.stack.livekit_secret,
            room=room or f"{self.name}-{uuid.uuid4().hex[:6]}",
            agent_name=self.name,
        )

    def kill(self) -> None:
        for w in self.workers:
            w.kill()


@pytest.fixture
def make_agent(stack: Stack, tmp_path: Path, tool_endpoint: ToolEndpoint) -> Iterator[Any]:
    agents: list[Agent] = []

    def make(max_per_worker: int = 2, executor: str | None = None) -> Agent:
        a = Agent(stack, tmp_path / f"a{len(agents)}", tool_endpoint.url, max_per_worker, executor)
        agents.append(a)
        return a

    yield make
    for a in agents:
        a.kill()


async def _joined(caller: Caller, timeout: float = 30) -> None:
    await caller.connect()
    assert await caller.wait_agent(timeout), "no agent joined the room"


async def _one_session(w: WorkerProc, caller: Caller) -> SessionsReport:
    """The worker lists exactly one session, the caller's room; its report."""
    report: SessionsReport = await until(
        lambda: w.sessions().activeSessions == 1 and w.sessions(), 10, "/sessions"
    )
    assert report.rooms[0].room == caller.room_name
    return report


def _sessions_rooms(w: WorkerProc) -> set[str]:
    return {r.room for r in w.sessions().rooms}


@pytest.mark.parametrize("executor", JOB_EXECUTORS)
async def test_call_turns_interruption_tool_reconnect_and_metrics(
    make_agent: Any, tool_endpoint: ToolEndpoint, executor: str
) -> None:
    """Jobs in processes or threads: the same call, the same /sessions and metrics."""
    agent: Agent = make_agent(executor=executor)
    await agent.standin.configure(modelDelayMs=MODEL_DELAY_MS, responseMs=1200)
    w = agent.worker()
    await asyncio.to_thread(w.wait_registered)
    caller = agent.caller()
    try:
        await _joined(caller)
        # the worker reports the room and the agent's identity
        report = await _one_session(w, caller)
        assert report.rooms[0].participant in caller.agents

        # a turn: the caller speaks, the agent answers with audio
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the agent never answered"
        overhead = turn.latency_s - (SILENCE_MS + MODEL_DELAY_MS) / 1000
        print(
            f"\nturn latency {turn.latency_s * 1000:.0f} ms; minus VAD silence and model delay: {overhead * 1000:.0f} ms"
        )
        assert 0 < turn.latency_s < 10  # sanity only
        await until(
            lambda: w.metric("voicefleet_worker_turn_latency_seconds_count") >= 1,
            10,
            "turn latency observed",
        )

        # interruption: a long answer, the caller talks over it, the agent stops
        await agent.standin.configure(responseMs=6000)
        await caller.speak_turn(1.0)
        assert await caller.wait_agent_audio(20) is not None
        stopped = await caller.interrupt(0.8, timeout=10)
        assert stopped is not None, "the agent kept talking over the caller"
        await until(
            lambda: w.metric("voicefleet_worker_interruptions_total") >= 1,
            15,
            "interruption counted",
        )
        await caller.wait_agent_quiet(30)
        await agent.standin.configure(responseMs=1200)

        # a tool call reaches the local HTTP endpoint with the model's arguments
        before = len(tool_endpoint.calls)
        await agent.standin.configure(
            nextToolCall={"name": "lookup_order", "arguments": {"orderId": "A-17"}}
        )
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None
        await until(lambda: len(tool_endpoint.calls) > before, 10, "tool endpoint called")
        call = tool_endpoint.calls[-1]
        assert call == {"args": {"orderId": "A-17"}, "room": caller.room_name}
        stats = await agent.standin.stats()
        assert any("shipped" in o.get("output", "") for o in stats["functionOutputs"]), stats[
            "functionOutputs"
        ]
        assert w.metric('voicefleet_worker_tool_calls_total{outcome="ok",tool="lookup_order"}') == 1

        # the stand-in drops the Realtime connection: the session reconnects and goes on
        await agent.standin.configure(dropNow=True)
        await until(
            lambda: w.metric('voicefleet_worker_reconnections_total{link="realtime"}') >= 1,
            30,
            "realtime reconnection counted",
        )
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "no answer after the Realtime reconnection"

        # the model reports an error: counted, and the session goes on
        await agent.standin.configure(errorNow=True)
        await until(
            lambda: w.metric('voicefleet_worker_model_errors_total{recoverable="true"}') >= 1,
            15,
            "model error counted",
        )
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "no answer after a model error"
    finally:
        await caller.close()

    await until(lambda: w.sessions().activeSessions == 0, 20, "session ended")
    m = w.metrics()
    assert m['voicefleet_worker_sessions_ended_total{outcome="completed"}'] == 1
    assert m["voicefleet_worker_sessions_started_total"] == 1
    assert m["voicefleet_worker_dispatch_latency_seconds_count"] == 1
    assert m["voicefleet_worker_model_first_audio_seconds_count"] >= 1
    assert m["voicefleet_worker_session_duration_seconds_count"] == 1
    assert m["voicefleet_worker_registered"] == 1
    names = {k.split("{")[0] for k in m}
    for spec in WORKER_METRICS:
        base = spec.name
        assert base in names or f"{base}_count" in names, f"{base} missing from /metrics"


async def test_full_worker_refuses_and_another_worker_serves(make_agent: Any) -> None:
    agent: Agent = make_agent(max_per_worker=2)
    a = agent.worker()
    await asyncio.to_thread(a.wait_registered)
    callers = [agent.caller() for _ in range(3)]
    try:
        for c in callers[:2]:
            await _joined(c)
        await until(lambda: a.sessions().activeSessions == 2, 15, "worker A full")
        # Full, the load livekit-agents reports to LiveKit is exactly the server's target_load
        # (sessions / maxPerWorker on LiveKit's scale: voicefleet_contract.capacity).
        full = float32(DEFAULT_TARGET_LOAD)
        await until(
            lambda: float32(a.worker_info().get("worker_load", 0.0)) == full,
            10,
            f"A reports load {full}",
        )
        assert a.health() == 200  # full is not unhealthy: the worker stays Ready
        b = agent.worker()
        await asyncio.to_thread(b.wait_registered)
        await _joined(callers[2])
        await until(
            lambda: callers[2].room_name in _sessions_rooms(b), 15, "worker B serves the third call"
        )
        assert _sessions_rooms(a) == {c.room_name for c in callers[:2]}
        assert a.sessions().activeSessions == 2
        # a call ends: A has room again
        await callers[0].close()
        await until(lambda: a.sessions().activeSessions == 1, 20, "A down to one session")
        half = float32(DEFAULT_TARGET_LOAD / 2)
        await until(
            lambda: float32(a.worker_info().get("worker_load", 0.0)) == half,
            10,
            f"A reports load {half}",
        )
    finally:
        for c in callers:
            await c.close()


async def test_sigterm_drains_live_sessions_then_exits(make_agent: Any) -> None:
    agent: Agent = make_agent(max_per_worker=4)
    await agent.standin.configure(modelDelayMs=MODEL_DELAY_MS, responseMs=800)
    a = agent.worker()
    await asyncio.to_thread(a.wait_registered)
    live = agent.caller()
    late = agent.caller()
    try:
        await _joined(live)
        await until(lambda: a.sessions().activeSessions == 1, 15, "live session")
        b = agent.worker()
        await asyncio.to_thread(b.wait_registered)

        a.terminate()
        await until(lambda: a.sessions().draining, 10, "worker A draining")
        assert a.health() == 200
        # a new call goes to B, never to the draining A
        await _joined(late)
        await until(lambda: late.room_name in _sessions_rooms(b), 15, "B serves the new call")
        assert _sessions_rooms(a) == {live.room_name}
        # the live call goes on
        turn = await live.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the draining worker stopped answering"
        assert a.alive()
    finally:
        await live.close()
    # the last session ended: A exits cleanly
    assert await asyncio.to_thread(a.wait, 30) == 0
    log = a.log.read_text()
    assert "drained: no sessions left" in log
    await late.close()


async def test_drain_timeout_cuts_sessions_and_exits(make_agent: Any) -> None:
    agent: Agent = make_agent()
    agent.config["sessions"]["drainTimeoutSeconds"] = 2
    a = agent.worker()
    await asyncio.to_thread(a.wait_registered)
    caller = agent.caller()
    try:
        await _joined(caller)
        await until(lambda: a.sessions().activeSessions == 1, 15, "live session")
        a.terminate()
        assert await asyncio.to_thread(a.wait, 60) == 0
    finally:
        await caller.close()
    assert "drain timed out" in a.log.read_text()


async def test_custom_agent_example_runs_on_the_runtime(make_agent: Any) -> None:
    """examples/custom-agent: custom code, same config, load, /sessions and metrics."""
    agent: Agent = make_agent()
    example = Path(__file__).resolve().parents[2] / "examples" / "custom-agent" / "my_agent.py"
    w = worker_proc(
        agent.dir / "custom",
        agent.config,
        livekit_env(agent.stack),
        OPENAI_BASE_URL=agent.standin.base_url,
    )
    w.args = [str(example)]
    agent.workers.append(w)
    w.start()
    await asyncio.to_thread(w.wait_registered)
    caller = agent.caller()
    try:
        await _joined(caller)
        # the example greets the caller first
        await caller.changes.wait_for(lambda: caller.report.first_audio_s is not None, 20)
        assert caller.report.first_audio_s is not None, "no greeting from the custom agent"
        report = w.sessions()
        assert report.activeSessions == 1 and report.rooms[0].room == caller.room_name
        # livekit-agents ignores the caller for its first 3 s of speech (AEC warm-up),
        # so speech over the greeting would go unheard: let the greeting finish
        assert await caller.wait_agent_quiet(20)
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, await agent.standin.stats()
    finally:
        await caller.close()
    await until(lambda: w.sessions().activeSessions == 0, 20, "session ended")
    assert w.metric('voicefleet_worker_sessions_ended_total{outcome="completed"}') == 1
    assert w.metric("voicefleet_worker_turn_latency_seconds_count") >= 1


async def test_a_livekit_agents_module_runs_unchanged_and_drains(make_agent: Any) -> None:
    """examples/livekit-agent: an agent module as livekit-agents' examples write one
    (AgentServer, @rtc_session, prewarm; nothing of voicefleet) named by VOICEFLEET_AGENT:
    dispatched under the VoiceAgent's name, answers, reports load and /sessions, its
    session observed for the worker's metrics, and drains on SIGTERM."""
    agent: Agent = make_agent(max_per_worker=2)
    await agent.standin.configure(modelDelayMs=MODEL_DELAY_MS, responseMs=800)
    example = Path(__file__).resolve().parents[2] / "examples" / "livekit-agent"
    path = os.pathsep.join(p for p in (str(example), os.environ.get("PYTHONPATH", "")) if p)
    w = worker_proc(
        agent.dir / "byo",
        agent.config,
        livekit_env(agent.stack),
        OPENAI_BASE_URL=agent.standin.base_url,
        PYTHONPATH=path,
        **{Env.AGENT: "livekit_agent"},
    )
    agent.workers.append(w)
    w.start()
    await asyncio.to_thread(w.wait_registered)
    caller = agent.caller()
    try:
        await _joined(caller)
        await _one_session(w, caller)
        half = float32(DEFAULT_TARGET_LOAD / 2)  # one of maxPerWorker 2
        await until(
            lambda: float32(w.worker_info().get("worker_load", 0.0)) == half,
            10,
            f"load {half} reported to LiveKit",
        )
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, await agent.standin.stats()
        await until(
            lambda: w.metric("voicefleet_worker_turn_latency_seconds_count") >= 1,
            10,
            "the agent's own session observed",
        )
        w.terminate()
        await until(lambda: w.sessions().draining, 10, "draining")
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the draining worker stopped answering"
    finally:
        await caller.close()
    assert await asyncio.to_thread(w.wait, 30) == 0
    log = w.log.read_text()
    assert '"agent": "livekit_agent"' in log and "drained: no sessions left" in log


def _job_pid(w: WorkerProc, room: str) -> int | None:
    """The pid of the process running `room`'s job, from the worker's "session starting"
    log record (JSON lines)."""
    for line in w.log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "session starting" and rec.get("room") == room:
            return int(rec["pid"])
    return None


async def test_a_crashed_job_process_ends_its_session_as_error_and_the_worker_serves_on(
    make_agent: Any,
) -> None:
    """Isolation: SIGKILL on one call's job process (an OOM kill, a native crash) ends
    that session with outcome `error`, leaves the other call answering, and the worker
    takes new calls."""
    agent: Agent = make_agent(max_per_worker=3, executor="process")
    await agent.standin.configure(modelDelayMs=MODEL_DELAY_MS, responseMs=800)
    w = agent.worker()
    await asyncio.to_thread(w.wait_registered)
    doomed, other, late = agent.caller(), agent.caller(), agent.caller()
    try:
        await _joined(doomed)
        await _joined(other)
        await until(lambda: w.sessions().activeSessions == 2, 15, "two sessions")
        pid = await until(lambda: _job_pid(w, doomed.room_name), 10, "the job's pid")
        assert w.proc is not None and pid != w.proc.pid, "the job ran in the worker process"
        os.kill(pid, signal.SIGKILL)
        await until(
            lambda: w.metric('voicefleet_worker_sessions_ended_total{outcome="error"}') == 1,
            15,
            "the killed job's session ended as error",
        )
        assert _sessions_rooms(w) == {other.room_name}
        assert w.alive() and w.health() == 200
        turn = await other.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the other call stopped answering"
        await _joined(late)
        await until(lambda: late.room_name in _sessions_rooms(w), 15, "a new call served")
    finally:
        for c in (doomed, other, late):
            await c.close()


async def test_unreachable_model_ends_the_session_as_error_and_the_worker_lives(
    make_agent: Any,
) -> None:
    agent: Agent = make_agent()
    await agent.standin.configure(refuseConnections=1000)
    w = agent.worker()
    await asyncio.to_thread(w.wait_registered)
    caller = agent.caller()
    try:
        await caller.connect()
        await until(
            lambda: w.metric('voicefleet_worker_sessions_ended_total{outcome="error"}') == 1,
            90,
            "the session ended as an error",
        )
        assert w.sessions().activeSessions == 0
        assert w.health() == 200 and w.metric("voicefleet_worker_registered") == 1
        assert w.alive()
    finally:
        await caller.close()


async def _room_metadata(agent: Agent, room: str) -> tuple[str, str]:
    """The room's metadata and SID ("", "" when there is no such room)."""
    async with api.LiveKitAPI(
        http_url(agent.stack.livekit_url), LIVEKIT_KEY, agent.stack.livekit_secret
    ) as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        return (str(rooms.rooms[0].metadata), str(rooms.rooms[0].sid)) if rooms.rooms else ("", "")


async def _summary_until(agent: Agent, room: str, check: Any, what: str) -> tuple[Turn, ...]:
    """The summary in the room metadata, opened with the workers' resume key."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        meta, sid = await _room_metadata(agent, room)
        found = read_summary(meta, parse_key(RESUME_KEY), Binding(room, sid))
        turns = found.turns if found is not None else ()
        if check(turns):
            return turns
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; summary: {turns}")
        await asyncio.sleep(0.2)


async def test_failover_resume_a_new_agent_continues_from_the_room_summary(
    make_agent: Any,
) -> None:
    """A call with two turns leaves its summary in the room metadata; the worker is
    SIGKILLed; a second worker is dispatched into the same room (as the operator's
    failover does) and its agent starts from the summary and speaks to the caller."""
    user_said, agent_said = "Where is my order A-17?", "Your order A-17 shipped yesterday."
    agent: Agent = make_agent()
    agent.config["failover"] = {"enabled": True, "resumeConversation": True, "summaryTurns": 6}
    agent.config["model"]["inputAudioTranscription"] = {"model": "whisper-1"}
    await agent.standin.configure(
        modelDelayMs=MODEL_DELAY_MS, responseMs=800, transcript=agent_said, userTranscript=user_said
    )
    a = agent.worker()
    await asyncio.to_thread(a.wait_registered, 120)
    caller = agent.caller()
    try:
        await _joined(caller)
        for _ in range(2):
            turn = await caller.turn(1.0, timeout=20)
            assert turn.latency_s is not None, "the agent never answered"
        turns = await _summary_until(
            agent, caller.room_name, lambda t: len(t) >= 4, "two turns in the room metadata"
        )
        assert [t.role for t in turns] == ["user", "assistant"] * 2
        assert {t.text for t in turns} == {user_said, agent_said}
        assert a.metric('voicefleet_worker_summary_writes_total{result="ok"}') >= 1
        assert a.metric('voicefleet_worker_summary_writes_total{result="error"}') == 0
        # the caller's own view of the room carries it too (room metadata is broadcast),
        # sealed: not a word of the conversation
        await until(lambda: "voicefleet" in caller.room.metadata, 10, "caller sees metadata")
        assert user_said not in caller.room.metadata and "A-17" not in caller.room.metadata

        # a healthy worker B is ready (started now: the call already went to A); A dies,
        # and B is dispatched into the same room (the operator's failover does that)
        b = agent.worker()
        await asyncio.to_thread(b.wait_registered, 120)
        a.kill()
        await agent.standin.reset()
        await agent.standin.configure(
            modelDelayMs=MODEL_DELAY_MS,
            responseMs=800,
            transcript="Back again.",
            userTranscript="Thanks, and my invoice?",
        )
        assert not _sessions_rooms(b), "B took a session before the failover"
        dispatched_at = asyncio.get_running_loop().time()
        await caller.create_dispatch()
        report = await until(
            lambda: caller.room_name in _sessions_rooms(b) and b.sessions(), 30, "B serves the room"
        )
        new_agent = report.rooms[0].participant
        await caller.changes.wait_for(lambda: new_agent in caller.agents, 30)
        assert new_agent in caller.agents, "the new agent never joined"

        # the new session started from the previous turns: a system note in its chat
        # context, instructions to continue, and a resume greeting instead of silence
        stats = await agent.standin.wait_stats(
            lambda s: any(m["role"] == "system" for m in s["createdMessages"]), 30
        )
        notes = [m["text"] for m in stats["createdMessages"] if m["role"] == "system"]
        assert len(notes) == 1, stats["createdMessages"]
        assert notes[0].count(f"Caller: {user_said}") == 2
        assert notes[0].count(f"You: {agent_said}") == 2
        assert "reconnected" in stats["lastSessionConfig"]["instructions"]
        assert stats["lastSessionConfig"]["instructions"].startswith("You are a test agent.")
        assert b.metric("voicefleet_worker_sessions_resumed_total") == 1

        # the caller hears the new agent (its resume greeting), then talks with it
        heard = await caller.changes.wait_for(
            lambda: caller.meter.onset_after(dispatched_at) is not None, 30
        )
        assert heard, "the caller never heard the new agent"
        assert await caller.wait_agent_quiet(20)
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the new agent never answered"

        # B keeps the summary going: the previous turns plus its own
        turns = await _summary_until(
            agent,
            caller.room_name,
            lambda t: bool(t) and t[-1].text == "Back again." and t[-2].role == "user",
            "B's turns in the summary",
        )
        assert len(turns) == 6
        assert turns[-2].text == "Thanks, and my invoice?"
        assert any(t.text == agent_said for t in turns)
    finally:
        await caller.close()


class Spy:
    """Everything a participant's `rtc.Room` is handed that could carry words: the room
    metadata (first and every change), every other participant's name, metadata and
    attributes, data packets, and the byte and text streams of livekit-agents' topics
    (its session host and transcriptions)."""

    TOPICS_BYTES = ("lk.agent.session",)
    TOPICS_TEXT = ("lk.transcription", "lk.chat")

    def __init__(self, room: Any, *, transcriptions: bool = True) -> None:
        self.room = room
        self.seen: list[str] = []
        self.streams: list[str] = []  # the topic of every stream received
        self._tasks: set[asyncio.Task[None]] = set()
        room.on("room_metadata_changed", lambda old, new: self.seen.append(new))
        room.on("participant_connected", self._participant)
        room.on("participant_metadata_changed", lambda p, old, new: self.seen.append(new))
        room.on(
            "participant_attributes_changed", lambda changed, p: self.seen.append(repr(changed))
        )
        room.on("data_received", lambda pkt: self.seen.append(repr(bytes(pkt.data))))
        for topic in self.TOPICS_BYTES:
            room.register_byte_stream_handler(topic, self._bytes)
        for topic in self.TOPICS_TEXT if transcriptions else ():
            room.register_text_stream_handler(topic, self._text)

    def _participant(self, p: Any) -> None:
        self.seen += [p.name, p.metadata, repr(dict(p.attributes))]

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _bytes(self, reader: Any, identity: str) -> None:
        async def read() -> None:
            self.streams.append(reader.info.topic)
            self.seen.append(repr(b"".join([c async for c in reader])))

        self._spawn(read())

    def _text(self, reader: Any, identity: str) -> None:
        async def read() -> None:
            self.streams.append(reader.info.topic)
            self.seen.append(await reader.read_all())

        self._spawn(read())

    def text(self) -> str:
        """All of it, as of now (the room's current state included)."""
        now = [self.room.metadata]
        for p in self.room.remote_participants.values():
            now += [p.name, p.metadata, repr(dict(p.attributes))]
        return "\n".join(self.seen + now)


async def _no_voicefleet_section(agent: Agent, room: str) -> bool:
    meta, _ = await _room_metadata(agent, room)
    return "voicefleet" not in meta


async def test_callers_never_read_earlier_turns_and_a_new_call_never_resumes_them(
    make_agent: Any,
) -> None:
    """Issue 13, item 6, on the real LiveKit: nothing LiveKit hands a participant holds a
    word of the conversation (the summary is sealed; livekit-agents' session host, which
    answers any participant with the chat history, is off). A caller who hangs up takes
    the summary with them; a new call in the same room (the same room instance: another
    participant keeps it open) starts fresh, also when the previous agent died mid-call."""
    secret_words = ("ZEBRA-4417", "Quokka", "member code")
    user_said = "My member code is ZEBRA-4417."
    agent_said = "Thank you Quokka, member code ZEBRA-4417 is verified."
    agent: Agent = make_agent()
    agent.config["failover"] = {"enabled": True, "resumeConversation": True, "summaryTurns": 6}
    agent.config["model"]["inputAudioTranscription"] = {"model": "whisper-1"}
    await agent.standin.configure(
        modelDelayMs=MODEL_DELAY_MS, responseMs=800, transcript=agent_said, userTranscript=user_said
    )
    a = agent.worker()
    await asyncio.to_thread(a.wait_registered, 120)
    first = agent.caller()
    room = first.room_name
    spy = Spy(first.room, transcriptions=False)  # its own live captions are its call
    # a late joiner that agents never take for their caller (like a recorder: kind egress)
    observer = rtc.Room()
    late = Spy(observer)
    callers = [first]
    try:
        await _joined(first)
        # ask the agent for the chat history the way a livekit-agents RemoteSession does
        ask = agent_pb.AgentSessionMessage(
            request=agent_pb.SessionRequest(
                request_id="r1", get_chat_history=agent_pb.SessionRequest.GetChatHistory()
            )
        )
        await first.room.local_participant.send_bytes(
            ask.SerializeToString(), topic="lk.agent.session", name="AS_spy"
        )
        for _ in range(2):
            turn = await first.turn(1.0, timeout=20)
            assert turn.latency_s is not None, "the agent never answered"
        turns = await _summary_until(agent, room, lambda t: len(t) >= 4, "the sealed summary")
        assert {t.text for t in turns} == {user_said, agent_said}  # the workers can read it
        await until(lambda: "voicefleet" in first.room.metadata, 10, "the caller sees metadata")

        # someone joins the call late: its room hands it none of the earlier turns
        token = (
            api.AccessToken(LIVEKIT_KEY, agent.stack.livekit_secret)
            .with_identity("late-joiner")
            .with_kind("egress")
            .with_grants(api.VideoGrants(room_join=True, room=room))
        )
        await observer.connect(agent.stack.livekit_url, token.to_jwt())
        await until(
            lambda: any(p.identity in first.agents for p in observer.remote_participants.values()),
            10,
            "the late joiner sees the agent",
        )
        for s in (spy, late):
            seen = s.text()
            for word in secret_words:
                assert word not in seen, f"{word!r} reached a participant:\n{seen}"
        # the session host would have answered the request and broadcast every item
        assert "lk.agent.session" not in spy.streams + late.streams

        # the caller hangs up: the call ended on purpose, the summary goes with it
        await first.close()
        callers.remove(first)
        assert await _poll_async(lambda: _no_voicefleet_section(agent, room), 20), (
            "the summary outlived the call"
        )
        assert a.metric("voicefleet_worker_sessions_resumed_total") == 0

        # a new call in the same room (the late joiner keeps the room instance open)
        await agent.standin.reset()
        await agent.standin.configure(
            modelDelayMs=MODEL_DELAY_MS,
            responseMs=800,
            transcript="Hello, how can I help?",
            userTranscript="Hi, I am a new caller.",
        )
        second = _api_caller(agent, room)
        second_spy = Spy(second.room)
        callers.append(second)
        await _joined(second)
        turn = await second.turn(1.0, timeout=20)
        assert turn.latency_s is not None
        turns = await _summary_until(agent, room, lambda t: len(t) >= 2, "call 2's summary")
        assert all(t.text not in (user_said, agent_said) for t in turns)
        stats = await agent.standin.stats()
        assert not [m for m in stats["createdMessages"] if m["role"] == "system"]
        assert a.metric("voicefleet_worker_sessions_resumed_total") == 0

        # the agent of call 2 dies mid-call (its summary stays, sealed); the caller gives
        # up, a third caller comes into the same room and is served by a healthy worker:
        # the summary is readable by it, but it is not its call
        b = agent.worker()
        await asyncio.to_thread(b.wait_registered, 120)
        a.kill()
        await second.close()
        callers.remove(second)
        third = _api_caller(agent, room)
        third_spy = Spy(third.room)
        callers.append(third)
        await _joined(third)
        turn = await third.turn(1.0, timeout=20)
        assert turn.latency_s is not None
        await until(lambda: b.metric("voicefleet_worker_sessions_started_total") >= 1, 10, "B")
        assert b.metric("voicefleet_worker_sessions_resumed_total") == 0
        stats = await agent.standin.stats()
        assert not [m for m in stats["createdMessages"] if m["role"] == "system"]
        for s in (second_spy, third_spy, late):
            seen = s.text()
            for word in secret_words:
                assert word not in seen, f"{word!r} reached a participant:\n{seen}"
    finally:
        for c in callers:
            await c.close()
        await observer.disconnect()


async def _poll_async(check: Any, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


def _api_caller(agent: Agent, room: str) -> Caller:
    """A caller into an existing room: the agent comes by CreateDispatch (a token's room
    configuration dispatches only when its join creates the room)."""
    return Caller(
        agent.stack.livekit_url,
        LIVEKIT_KEY,
        agent.stack.livekit_secret,
        room=room,
        agent_name=agent.name,
        dispatch="api",
    )


async def test_a_later_dispatch_of_the_same_agent_takes_the_call_and_the_earlier_leaves(
    make_agent: Any,
) -> None:
    """Two agents of one name in a room (LiveKit re-running a room's dispatch after a node
    loss does this; here a second CreateDispatch): the earlier agent goes (it leaves, or
    the later one removes it), the later one stays, resumes the conversation from the room's
    summary (which the earlier one must not remove) and answers
    (voicefleet_contract.one_agent)."""
    agent: Agent = make_agent(max_per_worker=2)
    agent.config["failover"] = {"enabled": True, "resumeConversation": True, "summaryTurns": 6}
    agent.config["model"]["inputAudioTranscription"] = {"model": "whisper-1"}
    await agent.standin.configure(
        modelDelayMs=MODEL_DELAY_MS, responseMs=600, transcript="Hello.", userTranscript="Hi."
    )
    a = agent.worker()
    await asyncio.to_thread(a.wait_registered, 120)
    # the LiveKit node it registered with, for per-node views: one series, LiveKit's node
    # id (the two-node test checks it is the right node's)
    nodes = {k: v for k, v in a.metrics().items() if k.startswith("voicefleet_worker_livekit_node")}
    assert list(nodes.values()) == [1.0] and 'node="ND_' in next(iter(nodes)), nodes
    caller = agent.caller()
    try:
        await _joined(caller)
        (first,) = caller.agents
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the first agent never answered"
        await _summary_until(agent, caller.room_name, lambda t: len(t) >= 2, "a turn summarised")
        await caller.create_dispatch()
        await until(
            lambda: caller.report.agent_joins == 2 and first not in caller.agents,
            30,
            "the second agent joins and the first leaves",
        )
        assert len(caller.agents) == 1
        await until(lambda: a.sessions().activeSessions == 1, 15, "one session left")
        # it left by itself (`duplicate`) or the later one removed it first (`completed`)
        ended = {
            o: a.metric(f'voicefleet_worker_sessions_ended_total{{outcome="{o}"}}')
            for o in ("duplicate", "completed", "error")
        }
        assert ended["duplicate"] + ended["completed"] == 1 and ended["error"] == 0, ended
        assert "leaving it the call" in a.tail(400) or "removing it" in a.tail(400)
        assert a.metric("voicefleet_worker_sessions_resumed_total") == 1
        # the earlier agent left the call, not ended it: it keeps the summary (its shutdown
        # says which it did), which is still there
        said = await until(
            lambda: [m for m in ("summary kept", "summary removed") if m in a.tail(400)],
            15,
            "the earlier agent's summary decision",
        )
        assert said == ["summary kept"], said
        assert await _summary_until(agent, caller.room_name, bool, "the summary kept")
        turn = await caller.turn(1.0, timeout=20)
        assert turn.latency_s is not None, "the agent that stayed did not answer"
        assert caller.report.agent_leaves == 1 and len(caller.agents) == 1
    finally:
        await caller.close()
