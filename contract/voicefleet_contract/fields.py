"""The field table of the agent configuration: every scalar field of agent.json, which is
also the VoiceAgent spec's field of the same name (`spec.sessions.maxPerWorker` is
`sessions.maxPerWorker`). Its type, default, bounds and description are stated here once:
the worker's and the operator's parser (`config.parse_config`) read them, and the CRD and
docs/voiceagent.md are generated from them (`crdgen/`). What a table cannot say (URLs,
lists, cross-field rules, CEL) stays hand-written beside the table's users.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from .capacity import DEFAULT_MAX_PER_WORKER

Kind = Literal["string", "integer", "number", "boolean"]
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    description: str
    default: Scalar | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    enum: tuple[str, ...] = ()
    max_length: int | None = None
    pattern: str | None = None


TURN_DETECTION_TYPES: Final = ("server_vad", "semantic_vad", "none")
MODALITIES: Final = ("audio", "text")
NOISE_REDUCTION_TYPES: Final = ("near_field", "far_field")
EAGERNESS: Final = ("low", "medium", "high", "auto")
TOOL_CHOICES: Final = ("auto", "none", "required")
# OpenAI Realtime voices as of gpt-realtime (2025-08). Enforced only when `model.baseURL`
# is unset, i.e. when talking to OpenAI itself: a typo there would fail every call at
# session start, while compatible endpoints (Azure, self-hosted, the testbed) may offer
# other voices.
OPENAI_VOICES: Final = (
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
VOICE_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
# 32 KiB of characters. System prompts are a few KB in practice; the Realtime API re-sends
# them with every session and every token costs latency. The hard limits above this one:
# kopf keeps the last handled spec in an annotation and all annotations of an object
# share 256 KiB; 32 Ki characters are at most 128 KiB of UTF-8, which leaves room.
MAX_INSTRUCTIONS: Final = 32_768

SESSIONS: Final = (
    Field(
        "maxPerWorker",
        "integer",
        "Concurrent sessions one worker serves: LiveKit dispatches exactly this many to it "
        "(its load is livekit.targetLoad x active/maxPerWorker).",
        DEFAULT_MAX_PER_WORKER,
        1,
        1000,
    ),
    Field(
        "drainTimeoutSeconds",
        "integer",
        "How long a stopping worker waits for its sessions to end; the pod's termination "
        "grace period covers it.",
        3600,
        0,
        86_400,
    ),
)

FAILOVER: Final = (
    Field("enabled", "boolean", "Re-dispatch orphaned sessions.", True),
    Field(
        "resumeConversation",
        "boolean",
        "Give the new worker a summary of the conversation so far.",
        True,
    ),
    Field("summaryTurns", "integer", "Turns carried over to the new worker.", 6, 0, 50),
)

OBSERVABILITY: Final = (
    Field("logTranscripts", "boolean", "Log transcripts (personal data!).", False),
)

TURN_DETECTION: Final = (
    Field(
        "type",
        "string",
        "server_vad (silence based), semantic_vad (meaning based) or none (the agent commits "
        "turns itself).",
        "server_vad",
        enum=TURN_DETECTION_TYPES,
    ),
    Field("threshold", "number", "server_vad activation threshold, 0 to 1.", None, 0.0, 1.0),
    Field(
        "prefixPaddingMs", "integer", "Audio kept before detected speech, in ms.", None, 0, 10_000
    ),
    Field("silenceDurationMs", "integer", "Silence that ends a turn, in ms.", None, 0, 10_000),
    Field(
        "eagerness",
        "string",
        "semantic_vad only: how eagerly the model takes its turn.",
        enum=EAGERNESS,
    ),
    Field("createResponse", "boolean", "Answer automatically when a turn ends.", True),
    Field("interruptResponse", "boolean", "Let the caller interrupt the agent (barge-in).", True),
    Field(
        "idleTimeoutMs",
        "integer",
        "Prompt the model after this much caller silence, in ms.",
        None,
        0,
        3_600_000,
    ),
)

TRANSCRIPTION: Final = (
    Field("model", "string", "Transcription model.", "gpt-4o-mini-transcribe", max_length=128),
    Field("language", "string", "ISO-639-1 language hint, e.g. en.", max_length=16),
    Field("prompt", "string", "Transcription prompt (vocabulary hints).", max_length=4096),
)

# The model's scalar fields; modalities, turnDetection, inputAudioTranscription, baseURL
# and apiKeySecret are written by hand where they are used.
MODEL: Final = (
    Field("provider", "string", "Model provider.", "openai-realtime", enum=("openai-realtime",)),
    Field("model", "string", "Realtime model name.", "gpt-realtime", max_length=128),
    Field(
        "voice",
        "string",
        f"Output voice. With OpenAI itself (no baseURL) one of: {', '.join(OPENAI_VOICES)}. "
        "With a compatible endpoint (baseURL set) any voice name it offers.",
        "marin",
        max_length=64,
        pattern=VOICE_RE.pattern,
    ),
    Field(
        "instructions",
        "string",
        f"System instructions (the prompt). At most {MAX_INSTRUCTIONS} characters: they are "
        "re-sent with every session.",
        "",
        max_length=MAX_INSTRUCTIONS,
    ),
    Field(
        "inputAudioNoiseReduction",
        "string",
        "Input noise reduction: near_field (headsets) or far_field (speakerphones).",
        enum=NOISE_REDUCTION_TYPES,
    ),
    Field(
        "temperature",
        "number",
        "Sampling temperature, where the model still accepts it (deprecated by the Realtime API).",
        None,
        0.0,
        2.0,
    ),
    Field("speed", "number", "Speech speed, 0.25 to 1.5.", None, 0.25, 1.5),
    Field("toolChoice", "string", "How the model picks tools.", enum=TOOL_CHOICES),
    Field(
        "maxSessionDurationSeconds", "number", "End a session after this many seconds.", None, 1.0
    ),
    Field("azureDeployment", "string", "Azure OpenAI deployment name.", max_length=128),
    Field("apiVersion", "string", "Azure OpenAI API version.", max_length=64),
)


def by_name(table: tuple[Field, ...]) -> dict[str, Field]:
    return {f.name: f for f in table}
