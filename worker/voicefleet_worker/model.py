"""The Realtime model a session talks to, built from the config's `model` section.

`realtime_kwargs` is pure: every parameter the config carries, mapped to
`livekit.plugins.openai.realtime.RealtimeModel`'s keyword arguments (only the ones set,
so the plugin keeps its own defaults). `ObservedRealtimeModel` adds one hook: each
`RealtimeSession` the AgentSession opens is handed to a callback, which is where the
worker counts Realtime reconnections, model errors and first-audio latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livekit.agents import llm
from livekit.plugins.openai import realtime
from openai.types.realtime import AudioTranscription
from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad

from voicefleet_contract.config import Model, TurnDetection


def turn_detection(td: TurnDetection) -> ServerVad | SemanticVad | None:
    if td.type == "none":
        return None
    if td.type == "semantic_vad":
        sem: dict[str, Any] = {
            "type": "semantic_vad",
            "create_response": td.createResponse,
            "interrupt_response": td.interruptResponse,
        }
        if td.eagerness is not None:
            sem["eagerness"] = td.eagerness
        return SemanticVad(**sem)
    srv: dict[str, Any] = {
        "type": "server_vad",
        "create_response": td.createResponse,
        "interrupt_response": td.interruptResponse,
    }
    for key, value in (
        ("threshold", td.threshold),
        ("prefix_padding_ms", td.prefixPaddingMs),
        ("silence_duration_ms", td.silenceDurationMs),
        ("idle_timeout_ms", td.idleTimeoutMs),
    ):
        if value is not None:
            srv[key] = value
    return ServerVad(**srv)


def realtime_kwargs(model: Model, *, api_key: str, base_url: str | None) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "model": model.model,
        "voice": model.voice,
        "modalities": list(model.modalities),
        "turn_detection": turn_detection(model.turnDetection),
        "api_key": api_key,
    }
    if base_url:
        kw["base_url"] = base_url
    tr = model.inputAudioTranscription
    if tr is not None:
        kw["input_audio_transcription"] = AudioTranscription.model_validate(
            {"model": tr.model, "language": tr.language, "prompt": tr.prompt}
        )
    if model.inputAudioNoiseReduction is not None:
        kw["input_audio_noise_reduction"] = model.inputAudioNoiseReduction
    if model.speed is not None:
        kw["speed"] = model.speed
    if model.temperature is not None:
        kw["temperature"] = model.temperature  # accepted (and ignored) by the v1 plugin
    if model.toolChoice is not None:
        kw["tool_choice"] = model.toolChoice
    if model.maxSessionDurationSeconds is not None:
        kw["max_session_duration"] = model.maxSessionDurationSeconds
    if model.azureDeployment:
        kw["azure_deployment"] = model.azureDeployment
    if model.apiVersion:
        kw["api_version"] = model.apiVersion
    return kw


class ObservedRealtimeModel(realtime.RealtimeModel):
    """`RealtimeModel` that reports each session it opens to `on_session`."""

    def __init__(
        self, *, on_session: Callable[[llm.RealtimeSession[Any]], None], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._on_session = on_session

    def session(self, *, turn_detection_disabled: bool = False) -> realtime.RealtimeSession:
        s = super().session(turn_detection_disabled=turn_detection_disabled)
        self._on_session(s)
        return s
