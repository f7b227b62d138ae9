"""One client connection to the stand-in: the Realtime protocol state machine.

Client events handled: session.update, input_audio_buffer.append/commit/clear,
conversation.item.create/delete/truncate, response.create, response.cancel. Anything
else gets an `error` event (`unknown_event_type`), so an unsupported call shows up in
the client's log instead of hanging.

A response is a task: `response.created` at once, then the scenario's model delay, then
either a function call (when one is queued) or a tone streamed as
`response.output_audio.delta` chunks with a word-by-word transcript, then `response.done`.
User speech (server VAD) or `response.cancel` ends it early with status `cancelled`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from ..audio import Tone
from . import protocol as p
from .scenario import Scenario
from .settings import ErrorSpec, ToolCall
from .vad import EnergyVad

log = logging.getLogger("voicefleet.realtime")
BYTES_PER_MS = p.SAMPLE_RATE * 2 // 1000  # PCM16 mono


class _Response:
    def __init__(self, resp_id: str, metadata: dict[str, Any] | None) -> None:
        self.id = resp_id
        self.metadata = metadata
        self.cancel_reason: str | None = None
        self.cancelled = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.cancelled.set()


class Connection:
    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, scenario: Scenario, model: str
    ) -> None:
        self.ws = ws
        self.request = request
        self.scenario = scenario
        self.session = p.default_session(model)
        s = scenario.settings
        self.vad = EnergyVad(p.SAMPLE_RATE, s.vadThresholdDb, s.minSpeechMs, 500)
        self.items: list[str] = []  # conversation item ids, in order
        self.item_data: dict[str, dict[str, Any]] = {}
        self.buffer_ms = 0.0  # uncommitted input audio
        self.speech_item: str | None = None  # the item id announced by speech_started
        self.unanswered_outputs: list[str] = []  # function outputs since the last response
        self.response: _Response | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._updated = False  # got a session.update
        # What this one connection saw (client events, VAD turns, responses), logged when it
        # closes: an unanswered caller's session says whether audio, a turn or a reply came.
        self.tally: Counter[str] = Counter()

    # --- plumbing --------------------------------------------------------------------------
    @property
    def stats(self) -> Any:
        return self.scenario.stats

    async def send(self, ev: dict[str, Any]) -> None:
        if self._closed or self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(ev))

    async def send_error(
        self, type_: str, code: str, message: str, event_id: str | None = None
    ) -> None:
        self.stats.errors_sent += 1
        log.info("scenario %s: error event %s: %s", self.scenario.name, code, message)
        self.stats.errors[:] = [*self.stats.errors[-49:], {"code": code, "message": message}]
        await self.send(p.error(type_, code, message, event_id))

    async def drop(self, mode: str = "abort") -> None:
        """Lose the connection: `abort` closes the TCP connection with no close frame."""
        if self._closed:
            return
        self._closed = True
        self.scenario.dropped()
        log.info("scenario %s: dropping a connection (%s)", self.scenario.name, mode)
        if self.response is not None:
            self.response.cancel("dropped")
        if mode == "close":
            await self.ws.close(code=1011, message=b"dropped by the Realtime stand-in")
        elif self.request.transport is not None:
            self.request.transport.abort()

    # --- main loop -------------------------------------------------------------------------
    async def run(self) -> None:
        self.scenario.opened(self)
        peer = self.request.remote
        log.info("scenario %s: connection from %s opened", self.scenario.name, peer)
        try:
            await self.send(p.event("session.created", session=self.session))
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    ev = json.loads(msg.data)
                    await self.handle(ev)
                except Exception as e:  # a bad event must not end the session
                    log.exception("bad client event")
                    await self.send_error("invalid_request_error", "invalid_event", str(e))
        finally:
            self._closed = True
            if self.response is not None:
                self.response.cancel("connection closed")
            self.scenario.closed(self)
            log.info(
                "scenario %s: connection from %s closed (%s)",
                self.scenario.name,
                peer,
                ", ".join(f"{k} {v}" for k, v in sorted(self.tally.items())),
            )

    async def handle(self, ev: dict[str, Any]) -> None:
        kind = str(ev.get("type"))
        self.stats.client_events[kind] += 1
        self.tally[kind] += 1
        handler = _HANDLERS.get(kind)
        if handler is None:
            await self.send_error(
                "invalid_request_error",
                "unknown_event_type",
                f"the Realtime stand-in does not support {kind!r}",
                ev.get("event_id"),
            )
            return
        await handler(self, ev)

    # --- session ---------------------------------------------------------------------------
    @property
    def turn_detection(self) -> dict[str, Any] | None:
        td = self.session.get("audio", {}).get("input", {}).get("turn_detection")
        return td if isinstance(td, dict) else None

    async def on_session_update(self, ev: dict[str, Any]) -> None:
        update = ev.get("session") or {}
        self.session = p.merge_session(self.session, update)
        if not self._updated:
            self.stats.sessions += 1
            self._updated = True
        self.stats.session_updates += 1
        self.stats.last_session = self.session
        td = self.turn_detection or {}
        self.vad.silence_ms = float(td.get("silence_duration_ms") or 500)
        await self.send(p.event("session.updated", session=self.session))

    # --- input audio -----------------------------------------------------------------------
    async def on_append(self, ev: dict[str, Any]) -> None:
        pcm = base64.b64decode(ev.get("audio", ""))
        ms = len(pcm) / BYTES_PER_MS
        self.buffer_ms += ms
        self.stats.audio_in_ms += ms
        td = self.turn_detection
        if td is None:
            return
        s = self.scenario.settings
        self.vad.threshold_db, self.vad.min_speech_ms = s.vadThresholdDb, s.minSpeechMs
        for vad_ev in self.vad.push(pcm):
            if vad_ev.kind == "start":
                await self._speech_started(vad_ev.audio_ms, td)
            else:
                await self._speech_stopped(vad_ev.audio_ms, td)

    async def _speech_started(self, audio_ms: int, td: dict[str, Any]) -> None:
        self.stats.speech_started += 1
        self.tally["vad speech_started"] += 1
        self.speech_item = p.new_id("item")
        await self.send(
            p.event(
                "input_audio_buffer.speech_started",
                audio_start_ms=audio_ms,
                item_id=self.speech_item,
            )
        )
        if self.response is not None and td.get("interrupt_response", True) is not False:
            self.response.cancel("turn_detected")

    async def _speech_stopped(self, audio_ms: int, td: dict[str, Any]) -> None:
        self.stats.speech_stopped += 1
        self.tally["vad speech_stopped"] += 1
        item_id = self.speech_item or p.new_id("item")
        self.speech_item = None
        await self.send(
            p.event("input_audio_buffer.speech_stopped", audio_end_ms=audio_ms, item_id=item_id)
        )
        await self._commit(item_id)
        if td.get("create_response", True) is not False:
            await self.start_response(None)

    async def _commit(self, item_id: str) -> None:
        previous = self.items[-1] if self.items else None
        item = p.message_item(
            item_id, "user", "completed", [{"type": "input_audio", "transcript": None}]
        )
        self._add_item(item, previous)
        self.buffer_ms = 0.0
        await self.send(
            p.event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        )
        await self.send(p.event("conversation.item.added", previous_item_id=previous, item=item))
        await self.send(p.event("conversation.item.done", previous_item_id=previous, item=item))
        if self.session.get("audio", {}).get("input", {}).get("transcription"):
            await self.send(
                p.event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=self.scenario.settings.userTranscript,
                )
            )

    async def on_commit(self, ev: dict[str, Any]) -> None:
        if self.buffer_ms < 100:
            await self.send_error(
                "invalid_request_error",
                "input_audio_buffer_commit_empty",
                f"buffer too small: {self.buffer_ms:.0f}ms of audio, at least 100ms needed",
                ev.get("event_id"),
            )
            return
        self.vad.reset()
        await self._commit(self.speech_item or p.new_id("item"))
        self.speech_item = None

    async def on_clear(self, ev: dict[str, Any]) -> None:
        self.buffer_ms = 0.0
        self.vad.reset()
        self.speech_item = None
        await self.send(p.event("input_audio_buffer.cleared"))

    # --- conversation items ----------------------------------------------------------------
    def _add_item(self, item: dict[str, Any], previous: str | None) -> None:
        index = self.items.index(previous) + 1 if previous in self.items else len(self.items)
        self.items.insert(index, item["id"])
        self.item_data[item["id"]] = item

    async def on_item_create(self, ev: dict[str, Any]) -> None:
        item = dict(ev.get("item") or {})
        item.setdefault("id", p.new_id("item"))
        item.setdefault("object", "realtime.item")
        event_id = ev.get("event_id")
        if item["id"] in self.item_data:
            await self.send_error(
                "invalid_request_error",
                "item_create_duplicate_item_id",
                f"item {item['id']} already exists",
                event_id,
            )
            return
        prev = ev.get("previous_item_id")
        if prev == "root":
            previous = None
            self.items.insert(0, item["id"])
            self.item_data[item["id"]] = item
        else:
            if prev is not None and prev not in self.item_data:
                await self.send_error(
                    "invalid_request_error",
                    "item_create_invalid_previous_item_id",
                    f"previous item {prev} does not exist",
                    event_id,
                )
                return
            previous = prev if prev is not None else (self.items[-1] if self.items else None)
            self._add_item(item, previous)
        if item.get("type") == "message":
            text = " ".join(
                str(c.get("text") or c.get("transcript") or "")
                for c in item.get("content") or []
                if isinstance(c, dict)
            )
            created = self.stats.created_messages
            created.append({"role": str(item.get("role", "")), "text": text})
            del created[:-50]
        if item.get("type") == "function_call_output":
            call_id = str(item.get("call_id", ""))
            name = next(
                (
                    str(d.get("name"))
                    for d in self.item_data.values()
                    if d.get("type") == "function_call" and d.get("call_id") == call_id
                ),
                "",
            )
            output = str(item.get("output", ""))
            self.stats.function_outputs.append({"callId": call_id, "name": name, "output": output})
            self.unanswered_outputs.append(output)
        await self.send(p.event("conversation.item.added", previous_item_id=previous, item=item))
        await self.send(p.event("conversation.item.done", previous_item_id=previous, item=item))

    async def on_item_delete(self, ev: dict[str, Any]) -> None:
        item_id = ev.get("item_id")
        if item_id not in self.item_data:
            await self.send_error(
                "invalid_request_error",
                "item_delete_invalid_item_id",
                f"item {item_id} does not exist",
                ev.get("event_id"),
            )
            return
        self.items.remove(item_id)
        del self.item_data[item_id]
        await self.send(p.event("conversation.item.deleted", item_id=item_id))

    async def on_item_truncate(self, ev: dict[str, Any]) -> None:
        item_id = ev.get("item_id")
        if item_id not in self.item_data:
            await self.send_error(
                "invalid_request_error",
                "item_truncate_invalid_item_id",
                f"item {item_id} does not exist",
                ev.get("event_id"),
            )
            return
        await self.send(
            p.event(
                "conversation.item.truncated",
                item_id=item_id,
                content_index=ev.get("content_index", 0),
                audio_end_ms=ev.get("audio_end_ms", 0),
            )
        )

    # --- responses -------------------------------------------------------------------------
    async def on_response_create(self, ev: dict[str, Any]) -> None:
        if self.response is not None and self.response.cancel_reason is None:
            await self.send_error(
                "invalid_request_error",
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.response.id}",
                ev.get("event_id"),
            )
            return
        params = ev.get("response") or {}
        metadata = params.get("metadata")
        await self.start_response(metadata if isinstance(metadata, dict) else None)

    async def on_response_cancel(self, ev: dict[str, Any]) -> None:
        wanted = ev.get("response_id")
        r = self.response
        if r is None or r.cancel_reason is not None or (wanted and wanted != r.id):
            await self.send_error(
                "invalid_request_error",
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
                ev.get("event_id"),
            )
            return
        r.cancel("client_cancelled")

    async def start_response(self, metadata: dict[str, Any] | None) -> None:
        previous = self.response
        if previous is not None and previous.task is not None:
            previous.cancel("turn_detected")
            await previous.task  # its tail events go first
        r = _Response(p.new_id("resp"), metadata)
        self.response = r
        self.stats.responses_created += 1
        self.tally["responses"] += 1
        await self.send(
            p.event("response.created", response=p.response(r.id, "in_progress", metadata))
        )
        r.task = asyncio.create_task(self._run_response(r), name=f"standin-{r.id}")

    async def _pause_until(self, r: _Response, deadline: float) -> bool:
        """Wait until `deadline` (loop time); True if the response was cancelled first."""
        delay = deadline - asyncio.get_running_loop().time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.cancelled.wait(), delay)
        else:
            await asyncio.sleep(0)
        return r.cancel_reason is not None

    async def _run_response(self, r: _Response) -> None:
        s = self.scenario.settings
        loop = asyncio.get_running_loop()
        try:
            if await self._pause_until(r, loop.time() + s.modelDelayMs / 1000):
                await self._finish(r, [], 0)
                return
            if s.failNextResponse is not None:
                await self._fail(r, s.failNextResponse)
                return
            outputs, self.unanswered_outputs = self.unanswered_outputs, []
            call = None if outputs else self.scenario.pop_tool_call()
            if call is not None:
                await self._function_call(r, call)
            else:
                text = s.transcript
                if outputs:
                    text = f"{s.transcript} The tool said: {' '.join(outputs)}"
                await self._speak(r, text)
        except Exception:
            log.exception("response %s failed", r.id)
        finally:
            if self.response is r:
                self.response = None

    async def _fail(self, r: _Response, spec: ErrorSpec) -> None:
        self.scenario.settings = replace(self.scenario.settings, failNextResponse=None)
        self.stats.responses_failed += 1
        details = {"type": "failed", "error": {"type": spec.type, "code": spec.code}}
        await self.send(
            p.event(
                "response.done",
                response=p.response(r.id, "failed", r.metadata, status_details=details),
            )
        )

    async def _function_call(self, r: _Response, call: ToolCall) -> None:
        item_id, call_id = p.new_id("item"), p.new_id("call")[:32]
        common = {"response_id": r.id, "output_index": 0}
        started = p.function_call_item(item_id, call_id, call.name, "", "in_progress")
        previous = self.items[-1] if self.items else None
        await self.send(p.event("response.output_item.added", **common, item=started))
        await self.send(p.event("conversation.item.added", previous_item_id=previous, item=started))
        done = p.function_call_item(item_id, call_id, call.name, call.arguments, "completed")
        self._add_item(done, previous)
        args = {"item_id": item_id, "call_id": call_id}
        await self.send(
            p.event(
                "response.function_call_arguments.delta", **common, **args, delta=call.arguments
            )
        )
        await self.send(
            p.event(
                "response.function_call_arguments.done",
                **common,
                **args,
                name=call.name,
                arguments=call.arguments,
            )
        )
        await self.send(p.event("response.output_item.done", **common, item=done))
        await self.send(p.event("conversation.item.done", previous_item_id=previous, item=done))
        self.stats.function_calls.append(
            {"callId": call_id, "name": call.name, "arguments": call.arguments}
        )
        await self._finish(r, [done], 10)

    async def _speak(self, r: _Response, text: str) -> None:
        s = self.scenario.settings
        loop = asyncio.get_running_loop()
        item_id = p.new_id("item")
        common = {"response_id": r.id, "item_id": item_id, "output_index": 0}
        previous = self.items[-1] if self.items else None
        started = p.message_item(item_id, "assistant", "in_progress", [])
        await self.send(
            p.event("response.output_item.added", response_id=r.id, output_index=0, item=started)
        )
        await self.send(p.event("conversation.item.added", previous_item_id=previous, item=started))
        self._add_item(started, previous)
        await self.send(
            p.event(
                "response.content_part.added",
                **common,
                content_index=0,
                part={"type": "audio", "transcript": ""},
            )
        )
        words = text.split(" ")
        said: list[str] = []
        tone = Tone(p.SAMPLE_RATE, s.toneHz, s.toneAmplitude)
        total = int(p.SAMPLE_RATE * s.responseMs / 1000)
        chunk = max(1, int(p.SAMPLE_RATE * s.chunkMs / 1000))
        fade = p.SAMPLE_RATE // 200  # 5 ms
        sent, t0, first = 0, loop.time(), True
        while sent < total:
            n = min(chunk, total - sent)
            pcm = tone.next(n).astype(np.float64)
            if sent == 0:
                pcm[: min(fade, n)] *= np.linspace(0, 1, min(fade, n))
            if sent + n == total:
                pcm[-min(fade, n) :] *= np.linspace(1, 0, min(fade, n))
            sent += n
            while len(said) < len(words) and len(said) / len(words) <= sent / total:
                delta = ("" if not said else " ") + words[len(said)]
                said.append(words[len(said)])
                await self.send(
                    p.event(
                        "response.output_audio_transcript.delta",
                        **common,
                        content_index=0,
                        delta=delta,
                    )
                )
            audio = base64.b64encode(pcm.astype(np.int16).tobytes()).decode()
            await self.send(
                p.event("response.output_audio.delta", **common, content_index=0, delta=audio)
            )
            self.stats.audio_out_ms += n * 1000 / p.SAMPLE_RATE
            if first and s.dropMidResponse:
                self.scenario.settings = replace(self.scenario.settings, dropMidResponse=False)
                await self.drop("abort")
                return
            first = False
            ahead_ms = sent * 1000 / p.SAMPLE_RATE - s.audioLeadMs
            deadline = t0 + max(0.0, ahead_ms) / 1000 / s.audioPace if s.audioPace > 0 else 0.0
            if await self._pause_until(r, deadline):
                break
        transcript = " ".join(said)
        cancelled = r.cancel_reason is not None
        await self.send(p.event("response.output_audio.done", **common, content_index=0))
        await self.send(
            p.event(
                "response.output_audio_transcript.done",
                **common,
                content_index=0,
                transcript=transcript,
            )
        )
        part = {"type": "audio", "transcript": transcript}
        await self.send(p.event("response.content_part.done", **common, content_index=0, part=part))
        done = p.message_item(
            item_id,
            "assistant",
            "incomplete" if cancelled else "completed",
            [{"type": "output_audio", "transcript": transcript}],
        )
        self.item_data[item_id] = done
        await self.send(
            p.event("response.output_item.done", response_id=r.id, output_index=0, item=done)
        )
        await self.send(p.event("conversation.item.done", previous_item_id=previous, item=done))
        await self._finish(r, [done], max(1, sent // 480))

    async def _finish(self, r: _Response, output: list[Any], tokens: int) -> None:
        if r.cancel_reason in ("dropped", "connection closed"):
            return
        if r.cancel_reason is not None:
            self.stats.responses_cancelled += 1
            status = "cancelled"
            details: dict[str, Any] | None = {"type": "cancelled", "reason": r.cancel_reason}
        else:
            self.stats.responses_completed += 1
            status, details = "completed", None
        resp = p.response(r.id, status, r.metadata, output, details, tokens)
        await self.send(p.event("response.done", response=resp))
        await self.send(p.rate_limits())


_HANDLERS = {
    "session.update": Connection.on_session_update,
    "input_audio_buffer.append": Connection.on_append,
    "input_audio_buffer.commit": Connection.on_commit,
    "input_audio_buffer.clear": Connection.on_clear,
    "conversation.item.create": Connection.on_item_create,
    "conversation.item.delete": Connection.on_item_delete,
    "conversation.item.truncate": Connection.on_item_truncate,
    "response.create": Connection.on_response_create,
    "response.cancel": Connection.on_response_cancel,
}
