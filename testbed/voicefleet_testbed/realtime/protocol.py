"""Server events of the OpenAI Realtime API (GA names), as plain dicts.

Only the fields the `livekit-plugins-openai` client reads, plus the ones that make an
event recognisable to a person reading a log. Every builder returns a new dict with a
fresh `event_id`.
"""

from __future__ import annotations

import secrets
from typing import Any

SAMPLE_RATE = 24000  # PCM16 mono, both directions


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": new_id("event"), **fields}


def default_session(model: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": SAMPLE_RATE}
    return {
        "type": "realtime",
        "id": new_id("sess"),
        "object": "realtime.session",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "audio": {
            "input": {
                "format": pcm,
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": pcm, "voice": "marin", "speed": 1.0},
        },
    }


def merge_session(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """session.update semantics: nested objects merge, anything else (null too) replaces."""
    out = dict(current)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "turn_detection":
            out[key] = merge_session(out[key], value)
        else:
            out[key] = value
    return out


def message_item(item_id: str, role: str, status: str, content: list[Any]) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": role,
        "status": status,
        "content": content,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def response(
    resp_id: str,
    status: str,
    metadata: dict[str, Any] | None,
    output: list[Any] | None = None,
    status_details: dict[str, Any] | None = None,
    output_tokens: int = 0,
) -> dict[str, Any]:
    return {
        "id": resp_id,
        "object": "realtime.response",
        "status": status,
        "status_details": status_details,
        "output": output or [],
        "metadata": metadata,
        "usage": {
            "total_tokens": output_tokens,
            "input_tokens": 0,
            "output_tokens": output_tokens,
        },
    }


def error(type_: str, code: str, message: str, event_id: str | None = None) -> dict[str, Any]:
    return event(
        "error",
        error={
            "type": type_,
            "code": code,
            "message": message,
            "param": None,
            "event_id": event_id,
        },
    )


def rate_limits() -> dict[str, Any]:
    return event(
        "rate_limits.updated",
        rate_limits=[
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5},
        ],
    )
