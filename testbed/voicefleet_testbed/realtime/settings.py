"""What a scenario of the Realtime stand-in does: timing, voice, VAD, tool calls, faults.

`Settings` holds the lasting knobs; `apply_control` merges a `POST /control` body into
them and returns the one-shot actions (drop, error) for the server to carry out. Keys
are camelCase, as in the JSON control API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    """A function call the stand-in makes instead of speaking."""

    name: str
    arguments: str = "{}"  # JSON text, as the Realtime API sends it

    @classmethod
    def parse(cls, value: Any) -> ToolCall:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ValueError("a tool call is an object with a string `name`")
        args = value.get("arguments", {})
        return cls(value["name"], args if isinstance(args, str) else json.dumps(args))


@dataclass(frozen=True)
class ErrorSpec:
    """An `error` event (or a failed response) to send."""

    type: str = "server_error"
    code: str = "standin_error"
    message: str = "error injected by the Realtime stand-in"

    @classmethod
    def parse(cls, value: Any) -> ErrorSpec:
        if value is True:
            return cls()
        if not isinstance(value, dict):
            raise ValueError("an error is true or an object with type, code, message")
        return cls(**{k: str(v) for k, v in value.items() if k in ("type", "code", "message")})


@dataclass(frozen=True)
class Settings:
    modelDelayMs: float = 200.0  # from speech end (or response.create) to the first audio
    responseMs: float = 1500.0  # how long each spoken answer lasts
    chunkMs: float = 40.0  # audio per response.output_audio.delta
    audioPace: float = 1.0  # 1 = real time, 2 = twice as fast, 0 = as fast as possible
    audioLeadMs: float = 200.0  # sent at once before pacing starts (the real API runs ahead)
    toneHz: float = 440.0
    toneAmplitude: float = 0.3
    transcript: str = "Hello from the voicefleet Realtime stand-in."
    userTranscript: str = "(caller speech)"
    vadThresholdDb: float = -40.0  # input energy above this is speech
    minSpeechMs: float = 60.0  # energy must stay up this long before speech_started
    toolCalls: tuple[ToolCall, ...] = ()  # queue: each user turn answers with the next one
    failNextResponse: ErrorSpec | None = None  # next response ends with status "failed"
    dropMidResponse: bool = False  # close the socket after the next response's first audio
    refuseConnections: int = 0  # the next N WebSocket handshakes get HTTP 503

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [vars(x) for x in v]
            elif isinstance(v, ErrorSpec):
                v = vars(v)
            out[f.name] = v
        return out


@dataclass
class Actions:
    """One-shot things a control request asks for, carried out by the server at once."""

    drop: bool = False
    drop_after_ms: float | None = None
    drop_mode: str = "abort"  # abort (no close frame) | close (close frame 1011)
    error: ErrorSpec | None = None
    tool_calls_added: list[ToolCall] = field(default_factory=list)


_NUMBERS = {
    "modelDelayMs",
    "responseMs",
    "chunkMs",
    "audioPace",
    "audioLeadMs",
    "toneHz",
    "toneAmplitude",
    "vadThresholdDb",
    "minSpeechMs",
}


def apply_control(settings: Settings, body: dict[str, Any]) -> tuple[Settings, Actions]:
    """Merge a control request into `settings`. Unknown keys raise ValueError."""
    changes: dict[str, Any] = {}
    actions = Actions()
    for key, value in body.items():
        if key == "scenario":
            continue
        if key in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a number >= 0")
            changes[key] = float(value)
        elif key in ("transcript", "userTranscript"):
            changes[key] = str(value)
        elif key == "toolCalls":
            changes[key] = tuple(ToolCall.parse(v) for v in value)
        elif key == "nextToolCall":
            call = ToolCall.parse(value)
            changes["toolCalls"] = (*changes.get("toolCalls", settings.toolCalls), call)
            actions.tool_calls_added.append(call)
        elif key == "failNextResponse":
            changes[key] = None if value in (None, False) else ErrorSpec.parse(value)
        elif key == "dropMidResponse":
            changes[key] = bool(value)
        elif key == "refuseConnections":
            changes[key] = int(value)
        elif key == "dropNow":
            actions.drop = bool(value)
            if isinstance(value, dict):
                actions.drop_mode = str(value.get("mode", "abort"))
        elif key == "dropAfterMs":
            actions.drop_after_ms = float(value)
        elif key == "dropMode":
            actions.drop_mode = str(value)
        elif key == "errorNow":
            actions.error = None if value in (None, False) else ErrorSpec.parse(value)
        else:
            raise ValueError(f"unknown setting {key!r}")
    if actions.drop_mode not in ("abort", "close"):
        raise ValueError("dropMode must be abort or close")
    return replace(settings, **changes), actions
