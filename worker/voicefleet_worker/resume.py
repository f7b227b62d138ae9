"""Resuming a conversation after failover: the rolling summary a worker keeps in the room's
metadata, and the note a re-dispatched agent starts from.

A worker that dies mid-call takes its memory with it; the operator re-dispatches the room
to another worker, which would start a fresh conversation. So while a session runs (with
`failover.resumeConversation`), the worker keeps the last `failover.summaryTurns` turns
(what the caller said and what the agent said, each clipped) in the **room metadata**,
under its own key, so it outlives the agent participant and the worker:

    {"voicefleet": {"v": 1, "summary": [{"role": "user", "text": "..."}, ...],
                    "updatedAt": 1764032400.0}, ...anything else that was there}

Everything here is pure (tested alone); `SummaryWriter` is the thin shell that writes it
with the LiveKit API, at most one write in flight, never blocking the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from voicefleet_contract.config import Failover

log = logging.getLogger("voicefleet.worker.resume")

METADATA_KEY = "voicefleet"
FORMAT_VERSION = 1
MAX_TEXT_CHARS = 300
# LiveKit's default limit for room metadata is 512 KiB (`limit.max_metadata_size`, and
# operators lower it); the summary keeps to a small share of any sane limit.
MAX_SUMMARY_BYTES = 16_000
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


def section(
    turns: Sequence[Turn], updated_at: float, max_bytes: int = MAX_SUMMARY_BYTES
) -> dict[str, Any]:
    """The `voicefleet` metadata section: the newest turns that fit in `max_bytes` (as
    UTF-8 JSON), oldest dropped first."""
    kept = list(turns)
    while True:
        out: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "summary": [{"role": t.role, "text": t.text} for t in kept],
            "updatedAt": round(updated_at, 3),
        }
        if not kept or _size(out) <= max_bytes:
            return out
        kept.pop(0)


def _size(obj: Any) -> int:
    return len(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())


def merge_metadata(existing: str, sec: dict[str, Any]) -> str | None:
    """Room metadata with `sec` under `voicefleet` and every other key kept. None when
    the existing metadata is not a JSON object (someone else's format: never clobbered)."""
    doc: dict[str, Any] = {}
    if existing.strip():
        try:
            parsed = json.loads(existing)
        except ValueError:
            return None
        if not isinstance(parsed, dict):
            return None
        doc = parsed
    doc[METADATA_KEY] = sec
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def read_summary(metadata: str, keep: int = 50) -> tuple[Turn, ...]:
    """The turns a previous agent left in the room metadata (the last `keep`); () when
    there are none or the metadata is not ours. Tolerant: anything malformed is skipped."""
    if not metadata.strip():
        return ()
    try:
        doc = json.loads(metadata)
    except ValueError:
        return ()
    sec = doc.get(METADATA_KEY) if isinstance(doc, dict) else None
    items = sec.get("summary") if isinstance(sec, dict) else None
    if not isinstance(items, list):
        return ()
    turns: tuple[Turn, ...] = ()
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            turns = append_turn(turns, str(item.get("role")), item["text"], keep)
    return turns


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


def http_url(url: str) -> str:
    """The LiveKit server API speaks HTTP on the same address as the ws:// signal URL."""
    for ws, http in (("ws://", "http://"), ("wss://", "https://")):
        if url.startswith(ws):
            return http + url[len(ws) :]
    return url


# --- the shell --------------------------------------------------------------------------
class MetadataSink(Protocol):
    async def __call__(self, room: str, metadata: str) -> None: ...


class SummaryWriter:
    """Keeps one session's rolling summary and writes it to the room metadata.

    `add()` is called from session events on the job's event loop and returns at once;
    the write runs as a task, one at a time, always with the latest turns (turns added
    during a write are written right after it). Failures are logged and counted
    (`on_result(ok)`), never raised into the session.
    """

    def __init__(
        self,
        *,
        room: str,
        keep: int,
        sink: MetadataSink,
        current_metadata: Callable[[], str],
        on_result: Callable[[bool], None] = lambda ok: None,
        initial: Sequence[Turn] = (),
        clock: Callable[[], float] = time.time,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.room = room
        self.keep = keep
        self.turns: tuple[Turn, ...] = tuple(initial)[-keep:] if keep > 0 else ()
        self._sink = sink
        self._current = current_metadata
        self._on_result = on_result
        self._clock = clock
        self._extra = extra or {}
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._foreign_warned = False
        self.writes = 0

    def add(self, role: str, text: str) -> None:
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
        while self._dirty:
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
        merged = merge_metadata(self._current(), section(self.turns, self._clock()))
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
        self.writes += 1
        self._on_result(True)

    async def idle(self) -> None:
        """Until no write is pending (tests, and a clean shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def aclose(self, timeout: float = 2.0) -> None:
        """Let a pending write finish (up to `timeout` seconds), then stop."""
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
