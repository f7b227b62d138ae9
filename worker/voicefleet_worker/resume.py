"""Resuming a conversation after failover: the rolling summary a worker keeps for its
call, sealed so that only the VoiceAgent's workers can read it, and the note a
re-dispatched agent starts from.

A worker that dies mid-call takes its memory with it; the operator re-dispatches the room
to another worker, which would start a fresh conversation. So while a session runs (with
`failover.resumeConversation`), the worker keeps the last `failover.summaryTurns` turns
(what the caller said and what the agent said, each clipped) in the **room metadata**,
under its own key, so it outlives the agent participant and the worker. LiveKit sends
room metadata to every participant, so the turns are sealed (AES-256-GCM) with the
VoiceAgent's resume key (the operator's `<name>-worker-keys` Secret, `VOICEFLEET_RESUME_KEY`):

    {"voicefleet": {"v": 2, "sealed": "<base64: 12-byte nonce + ciphertext + tag>"},
     ...anything else that was there}

Sealed inside: the turns, the job that wrote them, and the participant SIDs of the
callers in the room at the time. The room's name and SID are the associated data, so a
summary opens only in the room instance it was written in (a room closed and created
again under the same name has a new SID). A re-dispatched agent resumes only when one of
those callers are in the room, and nobody else: a new caller, even in a room that was
never closed, never gets an earlier caller's words (see `resumable`). The plaintext is padded to a multiple of
`PAD_BYTES`, so its length tells little about what was said. When a call ends on purpose
(the caller hangs up, the agent ends it) or its callers are gone, the summary is removed
(`without_section`).

Everything here is pure (tested alone); `SummaryWriter` is the thin shell that writes it
with the LiveKit API, at most one write in flight, never blocking the session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from voicefleet_contract.config import Failover

log = logging.getLogger("voicefleet.worker.resume")

METADATA_KEY = "voicefleet"
FORMAT_VERSION = 2  # 1 was plaintext turns: never read, replaced by the first write
MAX_TEXT_CHARS = 300
# LiveKit's default limit for room metadata is 512 KiB (`limit.max_metadata_size`, and
# operators lower it); the summary keeps to a small share of any sane limit (sealed and
# base64-encoded it is about 4/3 of this).
MAX_SUMMARY_BYTES = 16_000
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
PAD_BYTES = 512
AAD_PREFIX = b"voicefleet-resume/v2"
ELLIPSIS = "\u2026"

Role = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("user", "assistant")

RESUME_INSTRUCTIONS = (
    "You were just reconnected to a call that was already in progress; the conversation "
    "so far is in the system note 'Conversation so far'. Do not greet the caller as if "
    "the call were new: briefly say you are back and continue where the conversation "
    "left off."
)
RESUME_GREETING = (
    "The call was interrupted for a moment and you are back. In one short sentence, say "
    "you are back, then continue the conversation where it left off."
)
RESUME_NOTE_ID = "voicefleet_resume_summary"


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


def enabled(failover: Failover) -> bool:
    """Summaries are kept and read only with `resumeConversation` and at least one turn:
    `resumeConversation: false` writes nothing to the room and ignores what is there."""
    return failover.resumeConversation and failover.summaryTurns > 0


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Whitespace collapsed, at most `limit` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: max(0, limit - 1)].rstrip() + ELLIPSIS


def append_turn(turns: Sequence[Turn], role: str, text: str, keep: int) -> tuple[Turn, ...]:
    """`turns` plus one more (clipped), only the last `keep`. Empty text and unknown roles
    change nothing (a caller turn without a transcript has nothing to carry over)."""
    out = tuple(turns)
    clipped = clip(text)
    if role in ROLES and clipped:
        out = (*out, Turn(role, clipped))
    return out[-keep:] if keep > 0 else ()


def parse_key(raw: str) -> bytes:
    """The AES-256 key from its base64 text (standard or URL-safe); ValueError otherwise."""
    text = raw.strip()
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"must be {KEY_BYTES} bytes of base64 (got {len(key)} bytes)")
    return key


@dataclass(frozen=True)
class Binding:
    """The room instance a summary belongs to: its name and LiveKit's SID for it (a room
    closed and created again under the same name gets a new SID)."""

    room: str
    room_sid: str

    def aad(self) -> bytes:
        return b"\x00".join((AAD_PREFIX, self.room.encode(), self.room_sid.encode()))


@dataclass(frozen=True)
class Summary:
    turns: tuple[Turn, ...]
    job: str = ""  # the job that wrote it
    callers: frozenset[str] = field(default_factory=frozenset)  # their participant SIDs
    updated_at: float = 0.0


def plaintext(summary: Summary, max_bytes: int = MAX_SUMMARY_BYTES) -> bytes:
    """The summary as UTF-8 JSON: the newest turns that fit in `max_bytes` (oldest dropped
    first), padded with spaces (valid JSON still) to a multiple of `PAD_BYTES`."""
    kept = list(summary.turns)
    while True:
        doc: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "job": summary.job,
            "callers": sorted(summary.callers),
            "summary": [{"role": t.role, "text": t.text} for t in kept],
            "updatedAt": round(summary.updated_at, 3),
        }
        raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        if not kept or len(raw) <= max_bytes:
            return raw + b" " * (-len(raw) % PAD_BYTES)
        kept.pop(0)


def seal(
    key: bytes, binding: Binding, summary: Summary, nonce: bytes | None = None
) -> dict[str, Any]:
    """The `voicefleet` metadata section holding `summary`, sealed to `binding`."""
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext(summary), binding.aad())
    return {"v": FORMAT_VERSION, "sealed": base64.b64encode(nonce + sealed).decode()}


def unseal(key: bytes, binding: Binding, sec: Any, keep: int = 50) -> Summary | None:
    """The summary in a metadata section, or None: not ours, another key, another room
    (or room instance), tampered with, or malformed. Tolerant of odd turns inside."""
    blob = sec.get("sealed") if isinstance(sec, dict) and sec.get("v") == FORMAT_VERSION else None
    if not isinstance(blob, str):
        return None
    try:
        raw = base64.b64decode(blob, validate=True)
        opened = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], binding.aad())
        doc = json.loads(opened)
    except (binascii.Error, ValueError, InvalidTag):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), list):
        return None
    turns: tuple[Turn, ...] = ()
    for item in doc["summary"]:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            turns = append_turn(turns, str(item.get("role")), item["text"], keep)
    callers = doc.get("callers")
    updated = doc.get("updatedAt")
    return Summary(
        turns=turns,
        job=str(doc.get("job", "")),
        callers=frozenset(c for c in callers if isinstance(c, str))
        if isinstance(callers, list)
        else frozenset(),
        updated_at=float(updated) if isinstance(updated, int | float) else 0.0,
    )


def _doc(metadata: str) -> dict[str, Any] | None:
    """Room metadata as a JSON object; {} when empty; None when it is something else."""
    if not metadata.strip():
        return {}
    try:
        parsed = json.loads(metadata)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def merge_metadata(existing: str, sec: dict[str, Any]) -> str | None:
    """Room metadata with `sec` under `voicefleet` and every other key kept. None when
    the existing metadata is not a JSON object (someone else's format: never clobbered)."""
    doc = _doc(existing)
    if doc is None:
        return None
    doc[METADATA_KEY] = sec
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def without_section(existing: str, sec: dict[str, Any] | None) -> str | None:
    """Room metadata with our section removed, every other key kept; None when there is
    nothing to remove. With `sec`, only that very section is removed (a summary written
    since by another agent of the call is not ours to delete); without it, any voicefleet
    section (an older worker's plaintext one included)."""
    doc = _doc(existing)
    if doc is None or METADATA_KEY not in doc:
        return None
    if sec is not None and doc[METADATA_KEY] != sec:
        return None
    del doc[METADATA_KEY]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) if doc else ""


def read_summary(metadata: str, key: bytes, binding: Binding, keep: int = 50) -> Summary | None:
    """The summary a previous agent left in this room's metadata (its last `keep` turns),
    or None (none, not ours, not for this room instance, or unreadable with `key`)."""
    doc = _doc(metadata)
    if not doc:
        return None
    return unseal(key, binding, doc.get(METADATA_KEY), keep)


def resumable(summary: Summary | None, present: Collection[str]) -> tuple[Turn, ...]:
    """The turns to resume from: only when everyone in the room now (but agents, by
    participant SID) was already a caller of the call when the summary was last written.
    A new caller, also beside one who stayed, gets a fresh conversation: earlier turns
    never reach someone who was not there. () otherwise."""
    here = set(present)
    if summary is None or not summary.turns or not here or not here <= summary.callers:
        return ()
    return summary.turns


# Session close reasons (livekit-agents' CloseReason) that end the call on purpose: the
# caller left, the agent or the application closed the session.
DELIBERATE_CLOSE = frozenset({"participant_disconnected", "user_initiated", "task_completed"})


def ended_on_purpose(close_reason: str | None) -> bool:
    return close_reason in DELIBERATE_CLOSE


def should_clear(
    close_reason: str | None, callers_present: bool | None, handed_over: bool = False
) -> bool:
    """Whether a session that ends removes its summary: when the call ended on purpose,
    or when none of its callers is left in the room (`callers_present` False; None:
    unknown, or not asked because the call ended on purpose). Kept when the agent left a
    call that goes on (the room connection dropped, the agent removed by failover), and
    always when it `handed_over` the call to a later agent (whatever its session's close
    reason says: leaving closes it as user-initiated): the next agent may need it."""
    if handed_over:
        return False
    return ended_on_purpose(close_reason) or callers_present is False


def resume_note(turns: Sequence[Turn]) -> str:
    """The system note a resumed agent starts from."""
    lines = [
        "Conversation so far (the call was interrupted and has just been reconnected to "
        "you; the caller's words are transcripts, possibly imperfect):"
    ]
    for t in turns:
        lines.append(f"{'Caller' if t.role == 'user' else 'You'}: {t.text}")
    return "\n".join(lines)


def resume_instructions(base: str) -> str:
    return f"{base}\n\n{RESUME_INSTRUCTIONS}" if base.strip() else RESUME_INSTRUCTIONS


# --- the shell --------------------------------------------------------------------------
class MetadataSink(Protocol):
    async def __call__(self, room: str, metadata: str) -> None:
        """Set the room's metadata."""

    async def read(self, room: str) -> str | None:
        """The room's metadata now (None: the room is gone)."""


class SummaryWriter:
    """Keeps one session's rolling summary and writes it, sealed, to the room metadata.

    `add()` is called from session events on the job's event loop and returns at once;
    the write runs as a task, one at a time, always with the latest turns (turns added
    during a write are written right after it). Failures are logged and counted
    (`on_result(ok)`), never raised into the session. `clear()` at the session's end
    removes what this writer wrote (and stops it).
    """

    def __init__(
        self,
        *,
        room: str,
        keep: int,
        sink: MetadataSink,
        current_metadata: Callable[[], str],
        seal: Callable[[Sequence[Turn]], dict[str, Any]],
        on_result: Callable[[bool], None] = lambda ok: None,
        initial: Sequence[Turn] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.room = room
        self.keep = keep
        self.turns: tuple[Turn, ...] = tuple(initial)[-keep:] if keep > 0 else ()
        self._sink = sink
        self._current = current_metadata
        self._seal = seal
        self._on_result = on_result
        self._extra = extra or {}
        self._dirty = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._foreign_warned = False
        self.written: dict[str, Any] | None = None  # the section last written
        self.writes = 0

    def add(self, role: str, text: str) -> None:
        if self._closed:
            return
        turns = append_turn(self.turns, role, text, self.keep)
        if turns == self.turns:
            return
        self.turns = turns
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._flush(), name="voicefleet_summary_write"
            )

    async def _flush(self) -> None:
        while self._dirty and not self._closed:
            self._dirty = False
            try:
                await self._write()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed write never ends the session
                self._on_result(False)
                log.warning(
                    "conversation summary not written",
                    extra={**self._extra, "error": f"{type(e).__name__}: {str(e)[:200]}"},
                )

    async def _write(self) -> None:
        sec = self._seal(self.turns)
        merged = merge_metadata(self._current(), sec)
        if merged is None:
            self._on_result(False)
            if not self._foreign_warned:
                self._foreign_warned = True
                log.warning(
                    "room metadata is not a JSON object: the conversation summary is not "
                    "written (the room's own metadata is never overwritten)",
                    extra=self._extra,
                )
            return
        await self._sink(self.room, merged)
        self.written = sec
        self.writes += 1
        self._on_result(True)

    async def idle(self) -> None:
        """Until no write is pending (tests, and a clean shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def aclose(self, timeout: float = 2.0) -> None:
        """Let a pending write finish (up to `timeout` seconds), then stop."""
        self._closed = True
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def clear(self, timeout: float = 2.0) -> bool:
        """Stop, and remove the summary this writer wrote from the room metadata (read
        afresh: the room is left as it is now, less our section). True when removed."""
        await self.aclose(timeout)
        if self.written is None:
            return False
        try:
            current = await self._sink.read(self.room)
            out = without_section(current, self.written) if current is not None else None
            if out is None:
                return False
            await self._sink(self.room, out)
        except Exception as e:
            log.warning(
                "conversation summary not removed",
                extra={**self._extra, "error": f"{type(e).__name__}: {str(e)[:200]}"},
            )
            return False
        self.written = None
        return True
