"""The whole chain minus the worker runtime: a simulated caller talks over real LiveKit to
a livekit-agents `AgentSession` (the real plugin) backed by the stack's Realtime stand-in.

This is what the worker runs in a pod; here it runs in-process, so the stand-in's
protocol is checked against everything AgentSession does (instructions, tools, chat
context, truncation on interruption), not only against the bare RealtimeSession.
"""

from __future__ import annotations

import uuid

import pytest
from livekit import api, rtc
from livekit.agents import Agent, AgentSession, function_tool
from livekit.plugins import openai
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad

from voicefleet_testbed.caller import Caller
from voicefleet_testbed.realtime import StandInClient
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

pytestmark = pytest.mark.livekit


class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a helpful support agent.")
        self.lookups: list[str] = []

    @function_tool
    async def lookup_order(self, order_id: str) -> str:
        """Look up an order by id."""
        self.lookups.append(order_id)
        return f"order {order_id} shipped"


async def test_caller_agentsession_standin(stack: Stack) -> None:
    room_name = f"as-{uuid.uuid4().hex[:6]}"
    scenario = room_name
    control = StandInClient(stack.realtime_url, scenario)
    await control.configure(modelDelayMs=300, responseMs=1200)
    token = (
        api.AccessToken(LIVEKIT_KEY, stack.livekit_secret)
        .with_identity("agent-1")
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )
    room = rtc.Room()
    await room.connect(stack.livekit_url, token)
    model = openai.realtime.RealtimeModel(
        base_url=stack.openai_base_url(scenario),
        api_key="test",
        turn_detection=ServerVad(type="server_vad", silence_duration_ms=400),
    )
    session: AgentSession[None] = AgentSession(llm=model)
    agent = Support()
    caller = Caller(
        stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret, room_name, dispatch="none"
    )
    try:
        await session.start(agent=agent, room=room, record=False)
        await caller.connect()
        assert await caller.wait_agent(10)
        t = await caller.turn(1.0, timeout=10)
        assert t.latency_s is not None and t.latency_s >= 0.3, caller.report
        stats = await control.stats()
        assert stats["lastSessionConfig"]["instructions"] == "You are a helpful support agent."
        assert [x["name"] for x in stats["lastSessionConfig"]["tools"]] == ["lookup_order"]

        # a tool call round trip through AgentSession
        await control.configure(
            nextToolCall={"name": "lookup_order", "arguments": {"order_id": "42"}}
        )
        t = await caller.turn(1.0, timeout=10)
        assert t.latency_s is not None, caller.report
        assert agent.lookups == ["42"]
        stats = await control.wait_stats(lambda s: len(s["functionOutputs"]) == 1, 10)
        assert "order 42 shipped" in stats["functionOutputs"][0]["output"]

        # barge-in: the stand-in cancels, AgentSession stops playing and truncates
        await control.configure(responseMs=20_000)
        await caller.speak_turn(1.0)
        assert await caller.wait_agent_audio(10) is not None
        stopped = await caller.interrupt(1.0, timeout=5)
        assert stopped is not None, caller.report
        stats = await control.wait_stats(lambda s: s["interruptions"] >= 1, 10)
        assert stats["clientEvents"].get("conversation.item.truncate", 0) >= 1
        # AgentSession also sends response.cancel after the server cancelled on its own;
        # the real API answers "Cancellation failed" too, and the plugin ignores it
        codes = {e["code"] for e in stats["errors"]}
        assert codes <= {"response_cancel_not_active"}, stats["errors"]
    finally:
        await caller.close()
        await session.aclose()
        await model.aclose()
        await room.disconnect()
