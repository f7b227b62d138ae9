"""Config -> RealtimeModel: every parameter the config carries reaches the plugin."""

from __future__ import annotations

from voicefleet_contract.config import Model, parse_config
from voicefleet_worker.model import ObservedRealtimeModel, realtime_kwargs

from .util import agent_config


def _model(**model: object) -> Model:
    return parse_config(agent_config(model=model)).model


def test_server_vad_and_every_field() -> None:
    m = _model(
        model="gpt-realtime-mini",
        voice="cedar",
        modalities=["audio", "text"],
        turnDetection={
            "type": "server_vad",
            "threshold": 0.6,
            "prefixPaddingMs": 200,
            "silenceDurationMs": 450,
            "createResponse": False,
            "interruptResponse": False,
            "idleTimeoutMs": 9000,
        },
        inputAudioTranscription={"model": "whisper-1", "language": "de", "prompt": "names"},
        inputAudioNoiseReduction="far_field",
        temperature=0.7,
        speed=1.2,
        toolChoice="required",
        maxSessionDurationSeconds=1200,
    )
    kw = realtime_kwargs(m, api_key="k", base_url="http://127.0.0.1:9/v1")
    td = kw["turn_detection"]
    assert (td.type, td.threshold, td.prefix_padding_ms, td.silence_duration_ms) == (
        "server_vad",
        0.6,
        200,
        450,
    )
    assert (td.create_response, td.interrupt_response, td.idle_timeout_ms) == (False, False, 9000)
    tr = kw["input_audio_transcription"]
    assert (tr.model, tr.language, tr.prompt) == ("whisper-1", "de", "names")
    assert kw["model"] == "gpt-realtime-mini" and kw["voice"] == "cedar"
    assert kw["modalities"] == ["audio", "text"]
    assert kw["input_audio_noise_reduction"] == "far_field"
    assert (kw["temperature"], kw["speed"], kw["tool_choice"]) == (0.7, 1.2, "required")
    assert kw["max_session_duration"] == 1200
    assert kw["base_url"] == "http://127.0.0.1:9/v1" and kw["api_key"] == "k"

    # the plugin accepts all of it
    seen: list[object] = []
    model = ObservedRealtimeModel(on_session=seen.append, **kw)
    assert model._opts.turn_detection == td
    assert model._opts.base_url == "http://127.0.0.1:9/v1"
    assert model._opts.speed == 1.2


def test_semantic_vad_and_none() -> None:
    kw = realtime_kwargs(
        _model(turnDetection={"type": "semantic_vad", "eagerness": "high"}),
        api_key="k",
        base_url=None,
    )
    td = kw["turn_detection"]
    assert (td.type, td.eagerness, td.create_response, td.interrupt_response) == (
        "semantic_vad",
        "high",
        True,
        True,
    )
    assert "base_url" not in kw
    kw = realtime_kwargs(_model(turnDetection={"type": "none"}), api_key="k", base_url=None)
    assert kw["turn_detection"] is None


def test_defaults_leave_plugin_defaults() -> None:
    kw = realtime_kwargs(_model(), api_key="k", base_url=None)
    assert set(kw) == {"model", "voice", "modalities", "turn_detection", "api_key"}
