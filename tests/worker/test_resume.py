"""The failover resume summary: pure functions, and the writer against the real LiveKit
server (the room metadata a re-dispatched agent reads)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from livekit import api
from livekit.agents import JobContext

from voicefleet_contract.config import Failover
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack
from voicefleet_worker.config import load_settings
from voicefleet_worker.observe import SessionObserver
from voicefleet_worker.resume import (
    MAX_SUMMARY_BYTES,
    MAX_TEXT_CHARS,
    METADATA_KEY,
    RESUME_NOTE_ID,
    SummaryWriter,
    Turn,
    append_turn,
    clip,
    enabled,
    http_url,
    merge_metadata,
    read_summary,
    resume_instructions,
    resume_note,
    section,
)
from voicefleet_worker.runtime import Job, RoomMetadataSink, Runtime

from .util import agent_config, worker_env, write_config


# --- pure --------------------------------------------------------------------------------
def test_clip_collapses_whitespace_and_bounds_length() -> None:
    assert clip("  hello \n  there  ") == "hello there"
    long = "word " * 200
    out = clip(long)
    assert len(out) == MAX_TEXT_CHARS and out.endswith("\u2026")
    assert clip("abcdef", 4) == "abc\u2026"
    assert clip("") == ""


def test_append_turn_keeps_the_last_n_and_skips_empty_or_unknown() -> None:
    turns: tuple[Turn, ...] = ()
    for i in range(5):
        turns = append_turn(turns, "user" if i % 2 == 0 else "assistant", f"t{i}", keep=3)
    assert [t.text for t in turns] == ["t2", "t3", "t4"]
    assert append_turn(turns, "user", "   ", keep=3) == turns
    assert append_turn(turns, "system", "instructions", keep=3) == turns
    assert append_turn(turns, "user", "x", keep=0) == ()
    assert append_turn((), "assistant", "y" * 1000, keep=2)[0].text == clip("y" * 1000)


def test_section_drops_oldest_turns_until_it_fits() -> None:
    turns = tuple(Turn("user", f"{i:03d} " + "é" * 290) for i in range(50))
    sec = section(turns, 1.5)
    size = len(json.dumps(sec, ensure_ascii=False, separators=(",", ":")).encode())
    assert size <= MAX_SUMMARY_BYTES
    kept = [t["text"][:3] for t in sec["summary"]]
    assert kept and kept[-1] == "049"  # the newest survive
    assert len(kept) < 50
    assert sec["v"] == 1 and sec["updatedAt"] == 1.5
    assert section((), 2.0)["summary"] == []


def test_merge_keeps_foreign_keys_and_never_clobbers_non_json() -> None:
    sec = {"v": 1, "summary": [{"role": "user", "text": "hi"}], "updatedAt": 1.0}
    assert json.loads(merge_metadata("", sec) or "") == {METADATA_KEY: sec}
    merged = merge_metadata('{"crm": {"ticket": 7}, "voicefleet": {"old": true}}', sec)
    assert json.loads(merged or "") == {"crm": {"ticket": 7}, METADATA_KEY: sec}
    assert merge_metadata("plain text set by the app", sec) is None
    assert merge_metadata("[1, 2]", sec) is None


def test_read_summary_roundtrip_and_tolerance() -> None:
    turns = (Turn("user", "where is my order"), Turn("assistant", "let me check"))
    meta = merge_metadata('{"app": 1}', section(turns, 3.0)) or ""
    assert read_summary(meta) == turns
    assert read_summary(meta, keep=1) == turns[-1:]
    for bad in (
        "",
        "not json",
        "[]",
        '{"app": 1}',
        '{"voicefleet": "x"}',
        '{"voicefleet": {"summary": "x"}}',
    ):
        assert read_summary(bad) == ()
    odd = json.dumps(
        {METADATA_KEY: {"summary": [{"role": "user", "text": "ok"}, {"role": "x"}, 7, None]}}
    )
    assert read_summary(odd) == (Turn("user", "ok"),)


def test_resume_note_and_instructions() -> None:
    note = resume_note((Turn("user", "order 17?"), Turn("assistant", "It shipped.")))
    assert "Caller: order 17?" in note and "You: It shipped." in note
    assert resume_instructions("Be kind.").startswith("Be kind.\n\n")
    assert "reconnected" in resume_instructions("")


def test_enabled_only_with_resume_on_and_turns() -> None:
    assert enabled(Failover())  # the defaults: on, 6 turns
    assert not enabled(Failover(resumeConversation=False))
    assert not enabled(Failover(summaryTurns=0))


def test_http_url() -> None:
    assert http_url("ws://127.0.0.1:7880") == "http://127.0.0.1:7880"
    assert http_url("wss://lk.example") == "https://lk.example"
    assert http_url("http://x") == "http://x"


# --- the writer against the real LiveKit server -------------------------------------------
@pytest.fixture
async def room(stack: Stack) -> AsyncIterator[str]:
    name = f"resume-{uuid.uuid4().hex[:6]}"
    async with api.LiveKitAPI(http_url(stack.livekit_url), LIVEKIT_KEY, stack.livekit_secret) as lk:
        await lk.room.create_room(
            api.CreateRoomRequest(name=name, metadata='{"app": {"ticket": 7}}')
        )
        try:
            yield name
        finally:
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))


async def _metadata(stack: Stack, room: str) -> str:
    async with api.LiveKitAPI(http_url(stack.livekit_url), LIVEKIT_KEY, stack.livekit_secret) as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        return str(rooms.rooms[0].metadata)


@pytest.mark.livekit
async def test_writer_keeps_the_summary_in_room_metadata(stack: Stack, room: str) -> None:
    sink = RoomMetadataSink(stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret)
    results: list[bool] = []
    writer = SummaryWriter(
        room=room,
        keep=4,
        sink=sink,
        current_metadata=lambda: '{"app": {"ticket": 7}}',
        on_result=results.append,
        initial=(Turn("user", "from the previous agent"),),
    )
    try:
        # turns arrive faster than writes: writes coalesce, the last one has them all
        for i in range(6):
            writer.add("user" if i % 2 else "assistant", f"turn {i}")
        writer.add("assistant", "")  # nothing to add: no write
        await writer.idle()
    finally:
        await writer.aclose()
        await sink.aclose()
    meta = await _metadata(stack, room)
    assert json.loads(meta)["app"] == {"ticket": 7}  # foreign metadata kept
    assert [t.text for t in read_summary(meta)] == ["turn 2", "turn 3", "turn 4", "turn 5"]
    assert results and all(results)
    assert 1 <= writer.writes < 6


@pytest.mark.livekit
async def test_writer_counts_failures_and_never_raises(stack: Stack, room: str) -> None:
    dead = f"ws://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    sink = RoomMetadataSink(dead, LIVEKIT_KEY, stack.livekit_secret)
    results: list[bool] = []
    writer = SummaryWriter(
        room=room, keep=2, sink=sink, current_metadata=lambda: "", on_result=results.append
    )
    try:
        writer.add("user", "hello")
        await writer.idle()
    finally:
        await writer.aclose()
        await sink.aclose()
    assert results == [False]

    # non-JSON room metadata is someone else's: left alone, counted as an error
    results.clear()
    sink = RoomMetadataSink(stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret)
    writer = SummaryWriter(
        room=room, keep=2, sink=sink, current_metadata=lambda: "app text", on_result=results.append
    )
    try:
        writer.add("user", "hello")
        await writer.idle()
        writer.add("user", "again")
        await asyncio.wait_for(writer.idle(), 10)
    finally:
        await writer.aclose()
        await sink.aclose()
    assert results == [False, False] and writer.writes == 0
    assert json.loads(await _metadata(stack, room)) == {"app": {"ticket": 7}}


# --- what a resumed session's agent starts from --------------------------------------------
def _job(tmp_path: Path, resumed: tuple[Turn, ...]) -> Job:
    cfg = agent_config(model={"instructions": "Be kind."})
    settings = load_settings(worker_env(write_config(tmp_path, cfg)))
    # an entrypoint's Job without a live room: agent() only reads the configuration
    return Job(cast(JobContext, None), Runtime(settings), cast(SessionObserver, None), resumed)


def test_a_resumed_agent_starts_from_the_note_and_continue_instructions(tmp_path: Path) -> None:
    turns = (Turn("user", "order 17?"), Turn("assistant", "It shipped."))
    agent = _job(tmp_path, turns).agent()
    assert agent.instructions == resume_instructions("Be kind.")
    notes = [m for m in agent.chat_ctx.messages() if m.id == RESUME_NOTE_ID]
    assert len(notes) == 1 and notes[0].role == "system"
    assert notes[0].text_content == resume_note(turns)

    fresh = _job(tmp_path, ()).agent()
    assert fresh.instructions == "Be kind."
    assert not [m for m in fresh.chat_ctx.messages() if m.id == RESUME_NOTE_ID]
    # explicit arguments win, the resume addition still applies to given instructions
    custom = _job(tmp_path, turns).agent(instructions="Custom.")
    assert custom.instructions == resume_instructions("Custom.")
