"""The failover resume summary: pure functions (sealing, binding to one call, when it is
removed), and the writer against the real LiveKit server (the room metadata a
re-dispatched agent reads)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from livekit import api
from livekit.agents import JobContext

from voicefleet_contract import Env
from voicefleet_contract.config import ConfigError, Failover
from voicefleet_contract.livekit_url import http_url
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack
from voicefleet_worker.config import load_settings
from voicefleet_worker.job_runtime import Runtime
from voicefleet_worker.observe import SessionObserver
from voicefleet_worker.resume import (
    MAX_SUMMARY_BYTES,
    MAX_TEXT_CHARS,
    METADATA_KEY,
    PAD_BYTES,
    RESUME_NOTE_ID,
    Binding,
    Summary,
    SummaryWriter,
    Turn,
    append_turn,
    clip,
    enabled,
    merge_metadata,
    parse_key,
    plaintext,
    read_summary,
    resumable,
    resume_instructions,
    resume_note,
    seal,
    should_clear,
    unseal,
    without_section,
)
from voicefleet_worker.room_resume import RoomMetadataSink
from voicefleet_worker.sdk import Job

from .util import RESUME_KEY, agent_config, worker_env, write_config

KEY = parse_key(RESUME_KEY)
OTHER_KEY = bytes(32)
ROOM = Binding("call-1", "RM_aaaa")
TURNS = (Turn("user", "where is my order A-17"), Turn("assistant", "it shipped yesterday"))


def _summary(turns: tuple[Turn, ...] = TURNS, callers: tuple[str, ...] = ("PA_caller",)) -> Summary:
    return Summary(turns, job="AJ_1", callers=frozenset(callers), updated_at=3.0)


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


def test_parse_key_wants_32_bytes_of_base64() -> None:
    assert len(KEY) == 32
    urlsafe = base64.urlsafe_b64encode(b"\xfb" * 32).decode().rstrip("=")
    assert parse_key(urlsafe) == b"\xfb" * 32
    for bad in ("", "not base64 at all!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match=r"32 bytes|base64"):
            parse_key(bad)


def test_a_bad_resume_key_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, agent_config())
    with pytest.raises(ConfigError, match=Env.RESUME_KEY):
        load_settings(worker_env(cfg, **{Env.RESUME_KEY: "abc"}))
    assert load_settings(worker_env(cfg, **{Env.RESUME_KEY: ""})).secrets.resume_key is None
    settings = load_settings(worker_env(cfg))
    assert settings.secrets.resume_key == KEY
    assert RESUME_KEY not in repr(settings)


def test_plaintext_drops_oldest_turns_until_it_fits_and_pads() -> None:
    turns = tuple(Turn("user", f"{i:03d} " + "é" * 290) for i in range(50))
    raw = plaintext(_summary(turns))
    assert len(raw) % PAD_BYTES == 0
    doc = json.loads(raw)  # the padding is JSON whitespace
    assert len(raw.rstrip()) <= MAX_SUMMARY_BYTES
    kept = [t["text"][:3] for t in doc["summary"]]
    assert kept and kept[-1] == "049" and len(kept) < 50  # the newest survive
    assert doc["v"] == 2 and doc["updatedAt"] == 3.0 and doc["callers"] == ["PA_caller"]
    # one short turn or another: the same length, so the size says little
    assert len(plaintext(_summary((Turn("user", "yes"),)))) == len(
        plaintext(_summary((Turn("user", "my card number is 4242 4242"),)))
    )


def test_seal_hides_every_word_and_opens_only_with_its_key_and_room() -> None:
    sec = seal(KEY, ROOM, _summary())
    text = json.dumps(sec)
    for t in TURNS:  # (short words turn up in any base64 by chance)
        for word in [w for w in t.text.split() if len(w) >= 6] + [t.text]:
            assert word not in text
    assert "PA_caller" not in text and "AJ_1" not in text
    assert unseal(KEY, ROOM, sec) == _summary()
    assert unseal(OTHER_KEY, ROOM, sec) is None  # another VoiceAgent's key
    assert unseal(KEY, Binding("call-1", "RM_bbbb"), sec) is None  # the room made again
    assert unseal(KEY, Binding("call-2", "RM_aaaa"), sec) is None  # another room
    # two seals of the same summary differ (a fresh nonce each)
    assert seal(KEY, ROOM, _summary())["sealed"] != sec["sealed"]
    tampered = dict(
        sec,
        sealed=sec["sealed"][:-6] + ("A" if sec["sealed"][-6] != "A" else "B") + sec["sealed"][-5:],
    )
    assert unseal(KEY, ROOM, tampered) is None
    for bad in (None, "x", {}, {"v": 1, "summary": []}, {"v": 2, "sealed": "%%%"}, {"v": 2}):
        assert unseal(KEY, ROOM, bad) is None
    assert unseal(KEY, ROOM, sec, keep=1) == _summary(TURNS[-1:])


def test_read_summary_from_room_metadata() -> None:
    meta = merge_metadata('{"app": 1}', seal(KEY, ROOM, _summary())) or ""
    assert json.loads(meta)["app"] == 1
    got = read_summary(meta, KEY, ROOM)
    assert got is not None and got.turns == TURNS and got.job == "AJ_1"
    old_plaintext = json.dumps(
        {METADATA_KEY: {"v": 1, "summary": [{"role": "user", "text": "hi"}]}}
    )
    for bad in ("", "not json", "[]", '{"app": 1}', '{"voicefleet": "x"}', old_plaintext):
        assert read_summary(bad, KEY, ROOM) is None


def test_only_the_same_call_resumes() -> None:
    s = _summary(callers=("PA_caller", "PA_second"))
    assert resumable(s, {"PA_second", "PA_caller"}) == TURNS  # the call's callers
    assert resumable(s, {"PA_second"}) == TURNS  # one of them left meanwhile
    assert resumable(s, {"PA_new_caller"}) == ()  # a new call in the same room
    assert resumable(s, {"PA_second", "PA_new_caller"}) == ()  # someone new beside them
    assert resumable(s, set()) == ()
    assert resumable(None, {"PA_caller"}) == ()
    assert resumable(_summary(callers=()), {"PA_caller"}) == ()
    assert resumable(_summary(turns=()), {"PA_caller"}) == ()


def test_merge_keeps_foreign_keys_and_never_clobbers_non_json() -> None:
    sec = {"v": 2, "sealed": "abc"}
    assert json.loads(merge_metadata("", sec) or "") == {METADATA_KEY: sec}
    merged = merge_metadata('{"crm": {"ticket": 7}, "voicefleet": {"old": true}}', sec)
    assert json.loads(merged or "") == {"crm": {"ticket": 7}, METADATA_KEY: sec}
    assert merge_metadata("plain text set by the app", sec) is None
    assert merge_metadata("[1, 2]", sec) is None


def test_without_section_removes_only_ours() -> None:
    ours, theirs = {"v": 2, "sealed": "ours"}, {"v": 2, "sealed": "next agent's"}
    meta = merge_metadata('{"crm": 7}', ours) or ""
    assert json.loads(without_section(meta, ours) or "") == {"crm": 7}
    assert without_section(merge_metadata("", ours) or "", ours) == ""  # nothing left
    assert without_section(merge_metadata("", theirs) or "", ours) is None  # not ours
    assert without_section('{"crm": 7}', ours) is None  # nothing to remove
    assert without_section("app text", ours) is None
    assert without_section(merge_metadata("", theirs) or "", None) == ""  # any of ours


@pytest.mark.parametrize(
    ("reason", "present", "clear"),
    [
        ("participant_disconnected", None, True),  # the caller hung up
        ("user_initiated", None, True),  # the agent (or the app) ended it
        ("task_completed", None, True),
        ("job_shutdown", False, True),  # the agent left, and so did every caller
        ("job_shutdown", True, False),  # the agent was removed from a call that goes on
        ("job_shutdown", None, False),  # unknown: kept until the room ends
        (None, True, False),  # the session never closed (the room connection dropped)
        ("error", False, True),
        ("error", True, False),
    ],
)
def test_when_a_session_end_removes_the_summary(
    reason: str | None, present: bool | None, clear: bool
) -> None:
    assert should_clear(reason, present) is clear


@pytest.mark.parametrize("reason", ["user_initiated", "job_shutdown", None])
def test_a_call_handed_to_a_later_agent_keeps_the_summary(reason: str | None) -> None:
    assert should_clear(reason, None, handed_over=True) is False


def test_resume_note_and_instructions() -> None:
    note = resume_note((Turn("user", "order 17?"), Turn("assistant", "It shipped.")))
    assert "Caller: order 17?" in note and "You: It shipped." in note
    assert resume_instructions("Be kind.").startswith("Be kind.\n\n")
    assert "reconnected" in resume_instructions("")


def test_enabled_only_with_resume_on_and_turns() -> None:
    assert enabled(Failover())  # the defaults: on, 6 turns
    assert not enabled(Failover(resumeConversation=False))
    assert not enabled(Failover(summaryTurns=0))


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


def _sealer(binding: Binding) -> Any:
    return lambda turns: seal(KEY, binding, Summary(tuple(turns), "AJ_w", frozenset({"PA_c"}), 1.0))


@pytest.mark.livekit
async def test_writer_keeps_the_sealed_summary_in_room_metadata_and_clears_it(
    stack: Stack, room: str
) -> None:
    sink = RoomMetadataSink(stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret)
    binding = Binding(room, "RM_test")
    results: list[bool] = []
    writer = SummaryWriter(
        room=room,
        keep=4,
        sink=sink,
        current_metadata=lambda: '{"app": {"ticket": 7}}',
        seal=_sealer(binding),
        on_result=results.append,
        initial=(Turn("user", "from the previous agent"),),
    )
    try:
        # turns arrive faster than writes: writes coalesce, the last one has them all
        for i in range(6):
            writer.add("user" if i % 2 else "assistant", f"turn {i}")
        writer.add("assistant", "")  # nothing to add: no write
        await writer.idle()
        meta = await _metadata(stack, room)
        assert json.loads(meta)["app"] == {"ticket": 7}  # foreign metadata kept
        assert "turn" not in meta  # sealed: no word of it in what LiveKit hands out
        got = read_summary(meta, KEY, binding)
        assert got is not None
        assert [t.text for t in got.turns] == ["turn 2", "turn 3", "turn 4", "turn 5"]
        assert results and all(results)
        assert 1 <= writer.writes < 6

        # the call ends: the summary goes, the application's metadata stays
        assert await writer.clear()
        assert json.loads(await _metadata(stack, room)) == {"app": {"ticket": 7}}
        writer.add("user", "after the end")  # a stopped writer writes nothing more
        await writer.idle()
        assert json.loads(await _metadata(stack, room)) == {"app": {"ticket": 7}}
    finally:
        await writer.aclose()
        await sink.aclose()


@pytest.mark.livekit
async def test_writer_never_removes_a_summary_written_since_by_another_agent(
    stack: Stack, room: str
) -> None:
    sink = RoomMetadataSink(stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret)
    binding = Binding(room, "RM_test")
    writer = SummaryWriter(
        room=room, keep=2, sink=sink, current_metadata=lambda: "", seal=_sealer(binding)
    )
    try:
        writer.add("user", "hello")
        await writer.idle()
        # the next agent of the call has written its own summary since
        newer = merge_metadata("", _sealer(binding)([Turn("user", "newer")])) or ""
        await sink(room, newer)
        assert not await writer.clear()
        assert await _metadata(stack, room) == newer
    finally:
        await sink.aclose()


@pytest.mark.livekit
async def test_writer_counts_failures_and_never_raises(stack: Stack, room: str) -> None:
    dead = f"ws://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    sink = RoomMetadataSink(dead, LIVEKIT_KEY, stack.livekit_secret)
    binding = Binding(room, "RM_test")
    results: list[bool] = []
    writer = SummaryWriter(
        room=room,
        keep=2,
        sink=sink,
        current_metadata=lambda: "",
        seal=_sealer(binding),
        on_result=results.append,
    )
    try:
        writer.add("user", "hello")
        await writer.idle()
        assert not await writer.clear()  # nothing was written: nothing to remove
    finally:
        await writer.aclose()
        await sink.aclose()
    assert results == [False]

    # non-JSON room metadata is someone else's: left alone, counted as an error
    results.clear()
    sink = RoomMetadataSink(stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret)
    writer = SummaryWriter(
        room=room,
        keep=2,
        sink=sink,
        current_metadata=lambda: "app text",
        seal=_sealer(binding),
        on_result=results.append,
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
    return Job(
        cast(JobContext, None),
        Runtime(settings).job_runtime(),
        cast(SessionObserver, None),
        resumed,
    )


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
