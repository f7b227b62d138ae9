"""The agent configuration file (`agent.json`) the operator renders and the worker reads.

Field names are the VoiceAgent spec's own (camelCase), so a spec field and its config
field are spelled once. Secrets are never in this file: they reach the worker as
`secretKeyRef` env vars (see `Env`). `parse_config` validates plain JSON data and raises
`ConfigError` naming the bad field; `AgentConfig.to_dict` is its inverse.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Final, cast
from urllib.parse import urlsplit

from .capacity import (
    DEFAULT_MAX_PER_WORKER,
    DEFAULT_TARGET_LOAD,
    MAX_TARGET_LOAD,
    MIN_TARGET_LOAD,
)
from .fields import (
    FAILOVER,
    MODALITIES,
    MODEL,
    OBSERVABILITY,
    SESSIONS,
    TRANSCRIPTION,
    TURN_DETECTION,
    Field,
)
from .netguard import forbidden_host

CONFIG_VERSION: Final = 1
TOOL_NAME_RE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
# RFC 9110 token: what an HTTP header name may be.
HEADER_NAME_RE: Final = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
TOOL_HEADER_ENV_RE: Final = re.compile(r"^VOICEFLEET_TOOL_[0-9]+_HEADER_[0-9]+$")
MAX_TOOL_HEADERS: Final = 16
# Set by the worker itself, or by HTTP: a tool header may not be one of these.
RESERVED_TOOL_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "x-voicefleet-room",
        "x-voicefleet-job",
    }
)


def tool_header_env(tool: int, header: int) -> str:
    """The env var that carries header `header` of tool `tool` (indexes in spec.tools)."""
    return f"VOICEFLEET_TOOL_{tool}_HEADER_{header}"


class ConfigError(ValueError):
    """An invalid configuration value; `field` is its dotted path, e.g. `model.voice`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class TurnDetection:
    type: str = "server_vad"
    threshold: float | None = None
    prefixPaddingMs: int | None = None
    silenceDurationMs: int | None = None
    eagerness: str | None = None  # semantic_vad only
    createResponse: bool = True
    interruptResponse: bool = True
    idleTimeoutMs: int | None = None


@dataclass(frozen=True)
class Transcription:
    model: str = "gpt-4o-mini-transcribe"
    language: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class Model:
    provider: str = "openai-realtime"
    model: str = "gpt-realtime"
    voice: str = "marin"
    instructions: str = ""
    modalities: tuple[str, ...] = ("audio",)
    turnDetection: TurnDetection = field(default_factory=TurnDetection)
    inputAudioTranscription: Transcription | None = None
    inputAudioNoiseReduction: str | None = None
    temperature: float | None = None  # deprecated by the Realtime API; passed where accepted
    speed: float | None = None
    toolChoice: str | None = None
    maxSessionDurationSeconds: float | None = None
    baseURL: str | None = None  # an OpenAI-compatible endpoint; http(s) becomes ws(s)
    azureDeployment: str | None = None
    apiVersion: str | None = None


@dataclass(frozen=True)
class ToolHeader:
    """An HTTP header a tool call sends; its value is in the worker's environment
    (`env`, a secretKeyRef the operator renders), never in this file."""

    name: str
    env: str


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    url: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    timeoutSeconds: float = 10.0
    headers: tuple[ToolHeader, ...] = ()


@dataclass(frozen=True)
class Sessions:
    maxPerWorker: int = DEFAULT_MAX_PER_WORKER
    drainTimeoutSeconds: int = 3600


@dataclass(frozen=True)
class Failover:
    enabled: bool = True
    resumeConversation: bool = True
    summaryTurns: int = 6


@dataclass(frozen=True)
class Observability:
    logTranscripts: bool = False


@dataclass(frozen=True)
class AgentConfig:
    namespace: str
    voiceAgent: str
    agentName: str
    livekitURL: str
    # livekit-server's `agents.target_load`, mirrored: see voicefleet_contract.capacity.
    livekitTargetLoad: float = DEFAULT_TARGET_LOAD
    model: Model = field(default_factory=Model)
    tools: tuple[Tool, ...] = ()
    sessions: Sessions = field(default_factory=Sessions)
    failover: Failover = field(default_factory=Failover)
    observability: Observability = field(default_factory=Observability)
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _drop_none(asdict(self))
        # A tool's parameters are the user's JSON Schema, where null is a value
        # (`"default": null`): keep them verbatim.
        for tool, rendered in zip(self.tools, out["tools"], strict=True):
            rendered["parameters"] = tool.parameters
            if not tool.headers:
                # Absent, not []: a tool without headers renders as before they existed,
                # so an operator upgrade does not change every fleet's config hash.
                del rendered["headers"]
        return out

    def to_json(self) -> str:
        """Canonical JSON: the operator hashes it, so the same config gives the same text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


# --- parsing ---------------------------------------------------------------------------


class _Reader:
    """Typed access to one JSON object, naming the dotted path in every error."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "<root>", f"must be an object, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, types: tuple[type, ...], what: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise ConfigError(self.at(key), "is required")
            return None
        value = self.data[key]
        # bool is an int in Python; never accept it where a number is meant.
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(self.at(key), f"must be {what}, got a boolean")
        if not isinstance(value, types):
            raise ConfigError(self.at(key), f"must be {what}, got {type(value).__name__}")
        return value

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._get(key, (str,), "a string", required)
        return default if value is None else cast(str, value)

    def req_str(self, key: str, *, nonempty: bool = True) -> str:
        value = self._get(key, (str,), "a string", True)
        if nonempty and not value.strip():
            raise ConfigError(self.at(key), "must not be empty")
        return cast(str, value)

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.text(key, default)
        if value is not None and value not in choices:
            raise ConfigError(self.at(key), f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, (bool,), "a boolean", False)
        return default if value is None else cast(bool, value)

    def num(
        self, key: str, default: float | None, lo: float | None = None, hi: float | None = None
    ) -> float | None:
        value = self._get(key, (int, float), "a number", False)
        if value is None:
            return default
        self._range(key, value, lo, hi)
        return float(value)

    def integer(
        self, key: str, default: int | None, lo: float | None = None, hi: float | None = None
    ) -> int | None:
        value = self._get(key, (int,), "an integer", False)
        if value is None:
            return default
        self._range(key, value, lo, hi)
        return cast(int, value)

    def _range(self, key: str, value: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and value < lo:
            raise ConfigError(self.at(key), f"must be >= {lo}; got {value}")
        if hi is not None and value > hi:
            raise ConfigError(self.at(key), f"must be <= {hi}; got {value}")

    def field(self, f: Field) -> Any:
        """Field `f` of the table (fields.py): its type, bounds, choices and length
        checked, its default when absent."""
        if f.kind == "boolean":
            return self.flag(f.name, bool(f.default))
        if f.kind == "integer":
            return self.integer(f.name, cast(int | None, f.default), f.minimum, f.maximum)
        if f.kind == "number":
            return self.num(f.name, cast(float | None, f.default), f.minimum, f.maximum)
        default = cast(str | None, f.default)
        value = self.choice(f.name, f.enum, default) if f.enum else self.text(f.name, default)
        if value is not None and f.max_length is not None and len(value) > f.max_length:
            raise ConfigError(
                self.at(f.name), f"must be at most {f.max_length} characters; got {len(value)}"
            )
        if value is not None and f.pattern is not None and not re.match(f.pattern, value):
            raise ConfigError(self.at(f.name), f"must match {f.pattern}; got {value!r}")
        return value

    def fields(self, table: tuple[Field, ...]) -> dict[str, Any]:
        return {f.name: self.field(f) for f in table}

    def obj(self, key: str) -> _Reader | None:
        value = self.data.get(key)
        return None if value is None else _Reader(value, self.at(key))

    def items(self, key: str) -> list[Any]:
        value = self._get(key, (list,), "a list", False)
        return [] if value is None else cast(list[Any], value)


def _url(r: _Reader, key: str, schemes: tuple[str, ...], *, required: bool) -> str | None:
    value = r.req_str(key) if required else r.text(key)
    if value is None or value == "":
        return None
    m = re.match(r"^([a-z][a-z0-9+.-]*)://[^/\s]+", value)
    if not m or m.group(1) not in schemes:
        raise ConfigError(r.at(key), f"must be a {'/'.join(schemes)} URL; got {value!r}")
    return value


def _tool_url(r: _Reader) -> str:
    """A tool's URL: http(s), and never a link-local or cloud metadata address
    (netguard.py; the worker checks again after DNS)."""
    value = cast(str, _url(r, "url", ("http", "https"), required=True))
    host = urlsplit(value).hostname or ""
    why = forbidden_host(host)
    if why:
        raise ConfigError(
            r.at("url"),
            f"must not point at a link-local or cloud metadata address: {why}; got {value!r}",
        )
    return value


def _turn_detection(r: _Reader | None) -> TurnDetection:
    return TurnDetection() if r is None else TurnDetection(**r.fields(TURN_DETECTION))


def _model(r: _Reader | None) -> Model:
    if r is None:
        return Model()
    modalities = r.items("modalities") or ["audio"]
    for i, m in enumerate(modalities):
        if m not in MODALITIES:
            raise ConfigError(r.at(f"modalities[{i}]"), f"must be one of {', '.join(MODALITIES)}")
    tr = r.obj("inputAudioTranscription")
    return Model(
        **r.fields(MODEL),
        modalities=tuple(dict.fromkeys(modalities)),
        turnDetection=_turn_detection(r.obj("turnDetection")),
        inputAudioTranscription=Transcription(**tr.fields(TRANSCRIPTION)) if tr else None,
        baseURL=_url(r, "baseURL", ("http", "https", "ws", "wss"), required=False),
    )


def _tool_headers(t: _Reader) -> tuple[ToolHeader, ...]:
    raw = t.items("headers")
    if len(raw) > MAX_TOOL_HEADERS:
        raise ConfigError(t.at("headers"), f"must have at most {MAX_TOOL_HEADERS} items")
    out: list[ToolHeader] = []
    seen: set[str] = set()
    for j, item in enumerate(raw):
        h = _Reader(item, t.at(f"headers[{j}]"))
        name = h.req_str("name")
        if not HEADER_NAME_RE.match(name):
            raise ConfigError(h.at("name"), f"is not an HTTP header name: {name!r}")
        if name.lower() in RESERVED_TOOL_HEADERS:
            raise ConfigError(h.at("name"), f"{name} is set by the worker or by HTTP itself")
        if name.lower() in seen:
            raise ConfigError(h.at("name"), f"duplicate header {name!r}")
        seen.add(name.lower())
        env = h.req_str("env")
        if not TOOL_HEADER_ENV_RE.match(env):
            raise ConfigError(h.at("env"), f"must match {TOOL_HEADER_ENV_RE.pattern}; got {env!r}")
        out.append(ToolHeader(name, env))
    return tuple(out)


def _tools(r: _Reader) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    seen: set[str] = set()
    for i, raw in enumerate(r.items("tools")):
        t = _Reader(raw, r.at(f"tools[{i}]"))
        name = t.req_str("name")
        if not TOOL_NAME_RE.match(name):
            raise ConfigError(t.at("name"), f"must match {TOOL_NAME_RE.pattern}; got {name!r}")
        if name in seen:
            raise ConfigError(t.at("name"), f"duplicate tool name {name!r}")
        seen.add(name)
        headers = _tool_headers(t)
        params = t.obj("parameters")
        if params is not None and params.data.get("type", "object") != "object":
            raise ConfigError(params.at("type"), "a tool's parameters must be a JSON object schema")
        tools.append(
            Tool(
                name=name,
                description=t.req_str("description"),
                url=_tool_url(t),
                parameters=params.data if params else {"type": "object", "properties": {}},
                timeoutSeconds=cast(float, t.num("timeoutSeconds", 10.0, 0.1, 300.0)),
                headers=headers,
            )
        )
    return tuple(tools)


def parse_config(data: Any) -> AgentConfig:
    """Validate plain JSON data into an `AgentConfig`, or raise `ConfigError`."""
    r = _Reader(data, "")
    version = r.integer("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise ConfigError("version", f"unsupported config version {version}")
    s = r.obj("sessions") or _Reader({}, "sessions")
    f = r.obj("failover") or _Reader({}, "failover")
    o = r.obj("observability") or _Reader({}, "observability")
    return AgentConfig(
        version=CONFIG_VERSION,
        namespace=r.req_str("namespace"),
        voiceAgent=r.req_str("voiceAgent"),
        agentName=r.req_str("agentName"),
        livekitURL=cast(str, _url(r, "livekitURL", ("ws", "wss", "http", "https"), required=True)),
        livekitTargetLoad=cast(
            float,
            r.num("livekitTargetLoad", DEFAULT_TARGET_LOAD, MIN_TARGET_LOAD, MAX_TARGET_LOAD),
        ),
        model=_model(r.obj("model")),
        tools=_tools(r),
        sessions=Sessions(**s.fields(SESSIONS)),
        failover=Failover(**f.fields(FAILOVER)),
        observability=Observability(**o.fields(OBSERVABILITY)),
    )
