"""The VoiceAgent spec as typed data, with defaults.

`parse_spec` takes the object's metadata name/namespace and its `spec` (plain JSON data,
as the API server returns it after defaulting) and returns a `VoiceAgentSpec`, or raises
`SpecError(field, message)` naming the field by its full path (`spec.model.voice`).

The API server already rejects most bad input through the CRD schema and CEL rules
(`crdgen/crd.py`); this module re-checks what a render depends on, so the operator never crashes
on an object that slipped past an older CRD, and judges what CEL cannot (label syntax,
quantities, reserved names spelled in ways the schema cannot see). The agent
configuration part (model, tools, sessions, failover, observability) is validated by the
contract's own `parse_config`, so the operator and the worker accept the same things.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from voicefleet_contract import (
    AGENT_MODULE_RE,
    CONFIG_MOUNT_PATH,
    CONFIG_VOLUME,
    JOB_EXECUTORS,
    LABEL_INSTANCE,
    LABEL_NAME,
    MAX_AGENT_MODULE,
    SECRET_ENV,
    WORKER_CONTAINER,
    Env,
)
from voicefleet_contract.capacity import DEFAULT_TARGET_LOAD, MAX_TARGET_LOAD, MIN_TARGET_LOAD
from voicefleet_contract.config import (
    MAX_TOOL_HEADERS,
    AgentConfig,
    ConfigError,
    parse_config,
    tool_header_env,
)
from voicefleet_contract.fields import OPENAI_VOICES

AutoscalingMode = Literal["builtin", "hpa", "keda", "none"]
DispatchType = Literal["individual", "direct"]
SipTransport = Literal["auto", "udp", "tcp", "tls"]
DISPATCH_TYPES: Final[tuple[DispatchType, ...]] = ("individual", "direct")
SIP_TRANSPORTS: Final[tuple[SipTransport, ...]] = ("auto", "udp", "tcp", "tls")
# A phone number as LiveKit's SIP trunks take it: E.164 digits, with or without the +.
PHONE_RE: Final = re.compile(r"^\+?[0-9]{3,20}$")
# An IPv4/IPv6 address or CIDR, or a host name (what LiveKit's allowed_addresses accepts).
SIP_ADDRESS_RE: Final = re.compile(r"^[0-9A-Za-z.:\[\]-]{1,253}(/[0-9]{1,3})?$")
SIP_HOST_RE: Final = re.compile(r"^[0-9A-Za-z.\[\]:-]{1,253}$")
PIN_RE: Final = re.compile(r"^[0-9]{4,12}$")
ROOM_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MAX_NUMBERS: Final = 32
MAX_ADDRESSES: Final = 32
AUTOSCALING_MODES: Final[tuple[AutoscalingMode, ...]] = ("builtin", "hpa", "keda", "none")
PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")

MAX_TOOLS: Final = 64
MAX_REPLICAS: Final = 1000
# Children are named `<name>` plus a suffix of up to 8 characters (`-workers`); a
# Service name must be a DNS-1035 label of at most 63 characters.
MAX_NAME: Final = 55
DRAIN_MARGIN_SECONDS: Final = 30

# Env vars the operator sets itself; a template env entry may not shadow them.
RESERVED_ENV: Final = frozenset(
    {
        Env.CONFIG_FILE,
        Env.POD_NAME,
        Env.POD_NAMESPACE,
        Env.POD_IP,
        Env.METRICS_PORT,
        Env.HEALTH_PORT,
        Env.LOG_FORMAT,
        Env.LIVEKIT_URL,
    }
    | SECRET_ENV
)
# Env vars the operator sets from a spec field when that field is set: the field is the
# one place to say it (a template env entry would be a second, silently losing one).
ENV_FROM_SPEC: Final = {Env.AGENT: "spec.agent.module", Env.JOB_EXECUTOR: "spec.agent.jobExecutor"}
# Tool headers' values (spec.tools[].headers) reach workers as these env vars.
TOOL_HEADER_ENV_PREFIX: Final = "VOICEFLEET_TOOL_"
# Pod labels the selector depends on: a template label may not override them.
RESERVED_LABELS: Final = frozenset({LABEL_INSTANCE, LABEL_NAME})

DNS1035_RE: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The pod's own volume and container: a template's may not take their names.
RESERVED_VOLUMES: Final = frozenset({CONFIG_VOLUME})
RESERVED_CONTAINERS: Final = frozenset({WORKER_CONTAINER})
MAX_VOLUMES: Final = 32
MAX_CONTAINERS: Final = 8
DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
AGENT_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")
SECRET_KEY_RE: Final = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
ENV_NAME_RE: Final = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]{0,254}$")
# No bounded repeat: RE2 (the API server) caps repeat counts at 1000; maxLength bounds it.
IMAGE_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._/:@+-]*$")
QUANTITY_RE: Final = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
LABEL_NAME_RE: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE_RE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PERCENT_RE: Final = re.compile(r"^[0-9]{1,3}%$")


class SpecError(ValueError):
    """A VoiceAgent spec the operator cannot render; `field` is the full path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class ToolHeaderRef:
    """A tool header's value: a Secret key, rendered as a secretKeyRef env var `env`."""

    env: str
    ref: SecretKeyRef
    path: str  # spec.tools[i].headers[j], for errors


@dataclass(frozen=True)
class LiveKit:
    url: str
    credentialsSecret: str
    apiKeyKey: str = "apiKey"
    apiSecretKey: str = "apiSecret"
    targetLoad: float = DEFAULT_TARGET_LOAD

    @property
    def api_key_ref(self) -> SecretKeyRef:
        return SecretKeyRef(self.credentialsSecret, self.apiKeyKey)

    @property
    def api_secret_ref(self) -> SecretKeyRef:
        return SecretKeyRef(self.credentialsSecret, self.apiSecretKey)


@dataclass(frozen=True)
class Agent:
    """What code the workers run: the stock Realtime agent (module None) or a livekit-agents
    module of one's own in the image (`<module>[:<attribute>]`), and where its jobs run."""

    module: str | None = None
    jobExecutor: str | None = None  # None: the worker's default for that agent


@dataclass(frozen=True)
class Autoscaling:
    mode: AutoscalingMode = "builtin"
    minReplicas: int = 1
    maxReplicas: int = 10
    targetUtilization: float = 0.7
    bufferSessions: int = 0
    scaleUpStabilizationSeconds: int = 0
    scaleDownStabilizationSeconds: int = 300


@dataclass(frozen=True)
class Disruption:
    maxUnavailable: int | str = 1


@dataclass(frozen=True)
class Template:
    image: str | None = None
    imagePullPolicy: str | None = None
    imagePullSecrets: tuple[str, ...] = ()
    resources: dict[str, Any] | None = None
    env: tuple[dict[str, Any], ...] = ()
    nodeSelector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    topologySpreadConstraints: tuple[dict[str, Any], ...] = ()
    serviceAccountName: str | None = None
    priorityClassName: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    securityContext: dict[str, Any] | None = None
    containerSecurityContext: dict[str, Any] | None = None
    # Kubernetes Volume, VolumeMount (the worker container's) and Container objects, as
    # written: the API server validates them on the Deployment.
    volumes: tuple[dict[str, Any], ...] = ()
    volumeMounts: tuple[dict[str, Any], ...] = ()
    initContainers: tuple[dict[str, Any], ...] = ()
    containers: tuple[dict[str, Any], ...] = ()  # sidecars beside the worker


@dataclass(frozen=True)
class SipAuth:
    """SIP digest credentials from a Secret (never in the spec)."""

    secret: str
    usernameKey: str = "username"
    passwordKey: str = "password"


@dataclass(frozen=True)
class InboundTrunk:
    numbers: tuple[str, ...]
    allowedAddresses: tuple[str, ...] = ()
    allowedNumbers: tuple[str, ...] = ()
    auth: SipAuth | None = None


@dataclass(frozen=True)
class DispatchRule:
    type: DispatchType = "individual"
    roomPrefix: str = ""  # individual: rooms <prefix>_<caller>_<random>
    roomName: str = ""  # direct: every call in this room
    pin: str = ""
    metadata: str = ""  # the agent's job metadata
    attributes: dict[str, str] = field(default_factory=dict)  # on the caller's participant


@dataclass(frozen=True)
class OutboundTrunk:
    address: str
    numbers: tuple[str, ...]
    transport: SipTransport = "auto"
    auth: SipAuth | None = None


@dataclass(frozen=True)
class Telephony:
    inbound: InboundTrunk
    dispatch: DispatchRule = field(default_factory=DispatchRule)
    outbound: OutboundTrunk | None = None
    adopt: bool = False  # take over a trunk or rule already routing these numbers


@dataclass(frozen=True)
class VoiceAgentSpec:
    name: str
    namespace: str
    livekit: LiveKit
    apiKeySecret: SecretKeyRef | None  # None only with agent.module: the module's own keys
    config: AgentConfig  # exactly what the worker reads (agent.json)
    agent: Agent = field(default_factory=Agent)
    replicas: int | None = None
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    disruption: Disruption = field(default_factory=Disruption)
    template: Template = field(default_factory=Template)
    tool_headers: tuple[ToolHeaderRef, ...] = ()
    telephony: Telephony | None = None

    @property
    def agent_name(self) -> str:
        return self.config.agentName

    @property
    def max_per_worker(self) -> int:
        return self.config.sessions.maxPerWorker

    @property
    def drain_timeout_seconds(self) -> int:
        return self.config.sessions.drainTimeoutSeconds


# --- a small typed reader ---------------------------------------------------------------


def _obj(value: Any, path: str, *, required: bool = False) -> dict[str, Any]:
    if value is None:
        if required:
            raise SpecError(path, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be an object, got {type(value).__name__}")
    return dict(value)


def _str(
    d: Mapping[str, Any],
    key: str,
    path: str,
    *,
    required: bool = False,
    pattern: re.Pattern[str] | None = None,
    max_len: int | None = None,
) -> str | None:
    value = d.get(key)
    p = f"{path}.{key}"
    if value is None or value == "":
        if required:
            raise SpecError(p, "is required")
        return None
    if not isinstance(value, str):
        raise SpecError(p, f"must be a string, got {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise SpecError(p, f"must be at most {max_len} characters; got {len(value)}")
    if pattern is not None and not pattern.match(value):
        raise SpecError(p, f"must match {pattern.pattern}; got {value!r}")
    return value


def _int(
    d: Mapping[str, Any], key: str, path: str, default: int | None, lo: int, hi: int
) -> int | None:
    value = d.get(key)
    p = f"{path}.{key}"
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(p, f"must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise SpecError(p, f"must be between {lo} and {hi}; got {value}")
    return value


def _num(d: Mapping[str, Any], key: str, path: str, default: float, lo: float, hi: float) -> float:
    value = d.get(key)
    p = f"{path}.{key}"
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(p, f"must be a number, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise SpecError(p, f"must be between {lo} and {hi}; got {value}")
    return float(value)


def _list(d: Mapping[str, Any], key: str, path: str, max_items: int) -> list[Any]:
    value = d.get(key)
    p = f"{path}.{key}"
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(p, f"must be a list, got {type(value).__name__}")
    if len(value) > max_items:
        raise SpecError(p, f"must have at most {max_items} items; got {len(value)}")
    return value


def _str_map(d: Mapping[str, Any], key: str, path: str, *, labels: bool) -> dict[str, str]:
    raw = _obj(d.get(key), f"{path}.{key}")
    out: dict[str, str] = {}
    for k, v in raw.items():
        p = f"{path}.{key}[{k}]"
        if not isinstance(v, str):
            raise SpecError(p, f"must be a string, got {type(v).__name__}")
        if not _qualified_name(k):
            raise SpecError(p, "is not a valid key (an optional DNS prefix/ and a name)")
        if labels and (len(v) > 63 or not LABEL_VALUE_RE.match(v)):
            raise SpecError(p, f"is not a valid label value: {v!r}")
        out[k] = v
    return out


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN_RE.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(LABEL_NAME_RE.match(name))


def _dict_items(items: list[Any], path: str) -> tuple[dict[str, Any], ...]:
    return tuple(_obj(item, f"{path}[{i}]", required=True) for i, item in enumerate(items))


# --- parts ------------------------------------------------------------------------------


def _livekit(raw: Any) -> LiveKit:
    path = "spec.livekit"
    d = _obj(raw, path, required=True)
    url = cast(str, _str(d, "url", path, required=True, max_len=2048))
    if not re.match(r"^(wss?|https?)://[^/\s]+", url):
        raise SpecError(f"{path}.url", f"must be a ws, wss, http or https URL; got {url!r}")
    secret = cast(
        str,
        _str(
            d, "credentialsSecret", path, required=True, pattern=DNS1123_SUBDOMAIN_RE, max_len=253
        ),
    )
    return LiveKit(
        url=url,
        credentialsSecret=secret,
        apiKeyKey=_str(d, "apiKeyKey", path, pattern=SECRET_KEY_RE) or "apiKey",
        apiSecretKey=_str(d, "apiSecretKey", path, pattern=SECRET_KEY_RE) or "apiSecret",
        targetLoad=_num(
            d, "targetLoad", path, DEFAULT_TARGET_LOAD, MIN_TARGET_LOAD, MAX_TARGET_LOAD
        ),
    )


def _secret_ref(raw: Any, path: str, default_key: str) -> SecretKeyRef:
    d = _obj(raw, path, required=True)
    name = _str(d, "name", path, required=True, pattern=DNS1123_SUBDOMAIN_RE, max_len=253)
    key = _str(d, "key", path, pattern=SECRET_KEY_RE) or default_key
    return SecretKeyRef(cast(str, name), key)


def _check_model(model: dict[str, Any]) -> None:
    """What the field table cannot say (fields.py: types, bounds, lengths, patterns are
    checked by parse_config): the voice list with OpenAI itself, eagerness's type."""
    path = "spec.model"
    voice = model.get("voice")
    base_url = model.get("baseURL")
    if isinstance(voice, str) and voice and not base_url and voice not in OPENAI_VOICES:
        raise SpecError(
            f"{path}.voice",
            f"unknown voice {voice!r}; OpenAI Realtime voices are {', '.join(OPENAI_VOICES)} "
            "(any voice is accepted when model.baseURL names a compatible endpoint)",
        )
    td = _obj(model.get("turnDetection"), f"{path}.turnDetection")
    if td.get("eagerness") is not None and td.get("type", "server_vad") != "semantic_vad":
        raise SpecError(f"{path}.turnDetection.eagerness", "is only valid with type semantic_vad")


def _tools(raw: list[Any]) -> tuple[list[Any], tuple[ToolHeaderRef, ...]]:
    """spec.tools as agent.json has them: each header's `valueFrom.secretKeyRef` becomes
    the env var that carries it (`env`); the Secret keys, for the pod template."""
    tools: list[Any] = []
    refs: list[ToolHeaderRef] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, Mapping) or tool.get("headers") is None:
            tools.append(tool)  # parse_config names what is wrong with it
            continue
        headers = _list(tool, "headers", f"spec.tools[{i}]", MAX_TOOL_HEADERS)
        rendered = []
        for j, header in enumerate(headers):
            p = f"spec.tools[{i}].headers[{j}]"
            h = _obj(header, p, required=True)
            if "value" in h:
                raise SpecError(
                    f"{p}.value",
                    "a tool header comes from a Secret (valueFrom.secretKeyRef), never a "
                    "literal value: it would be stored in the agent ConfigMap",
                )
            source = _obj(h.get("valueFrom"), f"{p}.valueFrom", required=True)
            ref = _secret_ref(
                source.get("secretKeyRef"), f"{p}.valueFrom.secretKeyRef", default_key=""
            )
            if not ref.key:
                raise SpecError(f"{p}.valueFrom.secretKeyRef.key", "is required")
            env = tool_header_env(i, j)
            refs.append(ToolHeaderRef(env, ref, p))
            rendered.append({"name": h.get("name"), "env": env})
        tools.append({**tool, "headers": rendered})
    return tools, tuple(refs)


def _config(
    name: str, namespace: str, spec: Mapping[str, Any], livekit: LiveKit
) -> tuple[AgentConfig, tuple[ToolHeaderRef, ...]]:
    model = _obj(spec.get("model"), "spec.model")
    _check_model(model)
    tools, header_refs = _tools(_list(spec, "tools", "spec", MAX_TOOLS))
    agent_name = _str(spec, "agentName", "spec", pattern=AGENT_NAME_RE) or name
    data = {
        "namespace": namespace,
        "voiceAgent": name,
        "agentName": agent_name,
        "livekitURL": livekit.url,
        "livekitTargetLoad": livekit.targetLoad,
        "model": {k: v for k, v in model.items() if k != "apiKeySecret"},
        "tools": tools,
        "sessions": spec.get("sessions"),
        "failover": spec.get("failover"),
        "observability": spec.get("observability"),
    }
    try:
        return parse_config(data), header_refs
    except ConfigError as e:
        raise SpecError(_spec_path(e.field), e.message) from None


def _spec_path(config_field: str) -> str:
    """The spec path of an agent.json field: they share names but for these few."""
    renames = {
        "livekitURL": "spec.livekit.url",
        "livekitTargetLoad": "spec.livekit.targetLoad",
        "voiceAgent": "metadata.name",
        "namespace": "metadata.namespace",
    }
    return renames.get(config_field, f"spec.{config_field}")


def _agent(raw: Any) -> Agent:
    path = "spec.agent"
    d = _obj(raw, path)
    module = _str(d, "module", path, pattern=AGENT_MODULE_RE, max_len=MAX_AGENT_MODULE)
    executor = d.get("jobExecutor")
    if executor is not None and executor not in JOB_EXECUTORS:
        raise SpecError(
            f"{path}.jobExecutor", f"must be one of {', '.join(JOB_EXECUTORS)}; got {executor!r}"
        )
    unknown = set(d) - {"module", "jobExecutor"}
    if unknown:
        raise SpecError(path, f"unknown fields {sorted(unknown)}")
    return Agent(module, executor)


def _api_key(spec: Mapping[str, Any], agent: Agent) -> SecretKeyRef | None:
    """The Realtime API key's Secret. `spec.model` (and its key) is required by the stock
    agent, optional for a module of one's own, which may use no OpenAI model at all."""
    if spec.get("model") is None:
        if agent.module is None:
            raise SpecError(
                "spec.model", "is required unless spec.agent.module names an agent of your own"
            )
        return None
    model = _obj(spec.get("model"), "spec.model")
    return _secret_ref(model.get("apiKeySecret"), "spec.model.apiKeySecret", "apiKey")


def _autoscaling(raw: Any) -> Autoscaling:
    path = "spec.autoscaling"
    d = _obj(raw, path)
    mode = d.get("mode", "builtin")
    if mode not in AUTOSCALING_MODES:
        raise SpecError(
            f"{path}.mode", f"must be one of {', '.join(AUTOSCALING_MODES)}; got {mode!r}"
        )
    a = Autoscaling(
        mode=mode,
        minReplicas=cast(int, _int(d, "minReplicas", path, 1, 0, MAX_REPLICAS)),
        maxReplicas=cast(int, _int(d, "maxReplicas", path, 10, 1, MAX_REPLICAS)),
        targetUtilization=_num(d, "targetUtilization", path, 0.7, 0.1, 1.0),
        bufferSessions=cast(int, _int(d, "bufferSessions", path, 0, 0, 100_000)),
        scaleUpStabilizationSeconds=cast(
            int, _int(d, "scaleUpStabilizationSeconds", path, 0, 0, 3600)
        ),
        scaleDownStabilizationSeconds=cast(
            int, _int(d, "scaleDownStabilizationSeconds", path, 300, 0, 3600)
        ),
    )
    if a.minReplicas > a.maxReplicas:
        raise SpecError(
            f"{path}.minReplicas",
            f"must be <= maxReplicas; got minReplicas={a.minReplicas} maxReplicas={a.maxReplicas}",
        )
    if a.mode == "hpa" and a.minReplicas < 1:
        raise SpecError(f"{path}.minReplicas", "must be >= 1 in hpa mode (HPA cannot scale to 0)")
    return a


def _disruption(raw: Any) -> Disruption:
    path = "spec.disruptionBudget"
    d = _obj(raw, path)
    value = d.get("maxUnavailable", 1)
    if isinstance(value, bool) or not (
        (isinstance(value, int) and 0 <= value <= MAX_REPLICAS)
        or (isinstance(value, str) and PERCENT_RE.match(value) and int(value[:-1]) <= 100)
    ):
        raise SpecError(
            f"{path}.maxUnavailable", f"must be an integer >= 0 or a percentage; got {value!r}"
        )
    return Disruption(maxUnavailable=value)


def _env(items: list[Any]) -> tuple[dict[str, Any], ...]:
    path = "spec.template.env"
    out = _dict_items(items, path)
    for i, e in enumerate(out):
        p = f"{path}[{i}]"
        name = _str(e, "name", p, required=True, pattern=ENV_NAME_RE)
        if name in SECRET_ENV:
            raise SpecError(
                f"{p}.name",
                f"{name} carries a secret and is set by the operator from "
                "spec.livekit.credentialsSecret or spec.model.apiKeySecret; "
                "it cannot be set in spec.template.env, least of all as a literal value",
            )
        if name in ENV_FROM_SPEC:
            raise SpecError(f"{p}.name", f"{name} is set from {ENV_FROM_SPEC[name]}; set it there")
        if name in RESERVED_ENV or (name or "").startswith(TOOL_HEADER_ENV_PREFIX):
            raise SpecError(f"{p}.name", f"{name} is set by the operator and cannot be overridden")
        if "value" in e and "valueFrom" in e:
            raise SpecError(p, "set value or valueFrom, not both")
        if "value" in e and not isinstance(e["value"], str):
            raise SpecError(f"{p}.value", "must be a string")
        if "valueFrom" in e:
            _obj(e["valueFrom"], f"{p}.valueFrom", required=True)
    return out


def _resources(raw: Any) -> dict[str, Any] | None:
    path = "spec.template.resources"
    if raw is None:
        return None
    d = _obj(raw, path)
    for part in ("requests", "limits"):
        for k, v in _obj(d.get(part), f"{path}.{part}").items():
            if isinstance(v, bool) or not (
                (isinstance(v, int) and v >= 0) or (isinstance(v, str) and QUANTITY_RE.match(v))
            ):
                raise SpecError(f"{path}.{part}.{k}", f"is not a quantity: {v!r}")
    unknown = set(d) - {"requests", "limits"}
    if unknown:
        raise SpecError(path, f"unknown fields {sorted(unknown)}")
    return d


def _named(items: list[Any], path: str, reserved: frozenset[str]) -> tuple[dict[str, Any], ...]:
    """Objects each with a unique DNS-1123 label `name` (volumes, containers) that is not
    one of the operator's own."""
    out = _dict_items(items, path)
    seen: set[str] = set()
    for i, item in enumerate(out):
        name = cast(str, _str(item, "name", f"{path}[{i}]", required=True,
                              pattern=DNS1123_LABEL_RE, max_len=63))  # fmt: skip
        if name in reserved:
            raise SpecError(f"{path}[{i}].name", f"{name!r} is the operator's own; pick another")
        if name in seen:
            raise SpecError(f"{path}[{i}].name", f"{name!r} appears twice")
        seen.add(name)
    return out


def _mounts(
    items: list[Any], path: str, volumes: tuple[dict[str, Any], ...]
) -> tuple[dict[str, Any], ...]:
    """The worker container's extra mounts: each of a volume of the template, at an absolute
    path that is not the agent configuration's."""
    out = _dict_items(items, path)
    names = {v["name"] for v in volumes}
    for i, m in enumerate(out):
        p = f"{path}[{i}]"
        name = _str(m, "name", p, required=True)
        if name not in names:
            raise SpecError(f"{p}.name", f"no volume {name!r} in spec.template.volumes")
        mount = cast(str, _str(m, "mountPath", p, required=True, max_len=1024))
        if not mount.startswith("/"):
            raise SpecError(f"{p}.mountPath", f"must be an absolute path; got {mount!r}")
        if mount.rstrip("/") == CONFIG_MOUNT_PATH or mount.startswith(CONFIG_MOUNT_PATH + "/"):
            raise SpecError(f"{p}.mountPath", f"{CONFIG_MOUNT_PATH} holds the agent configuration")
    return out


def _template(raw: Any) -> Template:
    path = "spec.template"
    d = _obj(raw, path)
    pull = _str(d, "imagePullPolicy", path)
    if pull is not None and pull not in PULL_POLICIES:
        raise SpecError(f"{path}.imagePullPolicy", f"must be one of {', '.join(PULL_POLICIES)}")
    pull_secrets = []
    for i, s in enumerate(_list(d, "imagePullSecrets", path, 16)):
        ref = _obj(s, f"{path}.imagePullSecrets[{i}]", required=True)
        pull_secrets.append(
            cast(
                str,
                _str(ref, "name", f"{path}.imagePullSecrets[{i}]", required=True,
                     pattern=DNS1123_SUBDOMAIN_RE, max_len=253),
            )
        )  # fmt: skip
    labels = _str_map(d, "labels", path, labels=True)
    for key in labels:
        if key in RESERVED_LABELS:
            raise SpecError(f"{path}.labels[{key}]", "is set by the operator (the pod selector)")
    for key in ("affinity", "securityContext", "containerSecurityContext"):
        _obj(d.get(key), f"{path}.{key}")
    volumes = _named(_list(d, "volumes", path, MAX_VOLUMES), f"{path}.volumes", RESERVED_VOLUMES)
    init = _named(
        _list(d, "initContainers", path, MAX_CONTAINERS), f"{path}.initContainers",
        RESERVED_CONTAINERS,
    )  # fmt: skip
    sidecars = _named(
        _list(d, "containers", path, MAX_CONTAINERS), f"{path}.containers",
        RESERVED_CONTAINERS | {c["name"] for c in init},
    )  # fmt: skip
    return Template(
        volumes=volumes,
        volumeMounts=_mounts(
            _list(d, "volumeMounts", path, MAX_VOLUMES), f"{path}.volumeMounts", volumes
        ),
        initContainers=init,
        containers=sidecars,
        image=_str(d, "image", path, pattern=IMAGE_RE, max_len=1024),
        imagePullPolicy=pull,
        imagePullSecrets=tuple(pull_secrets),
        resources=_resources(d.get("resources")),
        env=_env(_list(d, "env", path, 128)),
        nodeSelector=_str_map(d, "nodeSelector", path, labels=True),
        tolerations=_dict_items(_list(d, "tolerations", path, 64), f"{path}.tolerations"),
        affinity=d.get("affinity") or None,
        topologySpreadConstraints=_dict_items(
            _list(d, "topologySpreadConstraints", path, 16), f"{path}.topologySpreadConstraints"
        ),
        serviceAccountName=_str(
            d, "serviceAccountName", path, pattern=DNS1123_SUBDOMAIN_RE, max_len=253
        ),
        priorityClassName=_str(
            d, "priorityClassName", path, pattern=DNS1123_SUBDOMAIN_RE, max_len=253
        ),
        annotations=_str_map(d, "annotations", path, labels=False),
        labels=labels,
        securityContext=d.get("securityContext") or None,
        containerSecurityContext=d.get("containerSecurityContext") or None,
    )


def _numbers(d: Mapping[str, Any], key: str, path: str, *, required: bool) -> tuple[str, ...]:
    items = _list(d, key, path, MAX_NUMBERS)
    if required and not items:
        raise SpecError(f"{path}.{key}", "needs at least one phone number")
    for i, n in enumerate(items):
        if not isinstance(n, str) or not PHONE_RE.match(n):
            raise SpecError(
                f"{path}.{key}[{i}]", f"must be a phone number like +15550100; got {n!r}"
            )
    if len({n.lstrip("+") for n in items}) != len(items):
        raise SpecError(f"{path}.{key}", "lists a number twice")
    return tuple(items)


def _sip_auth(raw: Any, path: str) -> SipAuth | None:
    if raw is None:
        return None
    d = _obj(raw, path)
    name = _str(d, "name", path, required=True, pattern=DNS1123_SUBDOMAIN_RE, max_len=253)
    return SipAuth(
        cast(str, name),
        _str(d, "usernameKey", path, pattern=SECRET_KEY_RE) or "username",
        _str(d, "passwordKey", path, pattern=SECRET_KEY_RE) or "password",
    )


def _dispatch(raw: Any, name: str) -> DispatchRule:
    path = "spec.telephony.dispatch"
    d = _obj(raw, path)
    kind = d.get("type", "individual")
    if kind not in DISPATCH_TYPES:
        raise SpecError(f"{path}.type", f"must be one of {', '.join(DISPATCH_TYPES)}; got {kind!r}")
    room = _str(d, "roomName", path, pattern=ROOM_RE) or ""
    prefix = _str(d, "roomPrefix", path, max_len=64) or ""
    if kind == "direct" and not room:
        raise SpecError(f"{path}.roomName", "is required for type direct")
    if kind == "individual" and room:
        raise SpecError(f"{path}.roomName", "is for type direct; individual uses roomPrefix")
    if prefix and not ROOM_RE.match(prefix):
        raise SpecError(f"{path}.roomPrefix", f"must be a room name prefix; got {prefix!r}")
    return DispatchRule(
        type=kind,
        roomPrefix=prefix or (f"call-{name}" if kind == "individual" else ""),
        roomName=room,
        pin=_str(d, "pin", path, pattern=PIN_RE) or "",
        metadata=_str(d, "metadata", path, max_len=4096) or "",
        attributes=_str_map(d, "attributes", path, labels=False),
    )


def _telephony(raw: Any, name: str) -> Telephony | None:
    """spec.telephony: LiveKit SIP trunks and a dispatch rule for this VoiceAgent."""
    path = "spec.telephony"
    if raw is None:
        return None
    d = _obj(raw, path)
    inbound_raw = _obj(d.get("inbound"), f"{path}.inbound", required=True)
    ip = f"{path}.inbound"
    addresses = _list(inbound_raw, "allowedAddresses", ip, MAX_ADDRESSES)
    for i, a in enumerate(addresses):
        if not isinstance(a, str) or not SIP_ADDRESS_RE.match(a):
            raise SpecError(
                f"{ip}.allowedAddresses[{i}]", f"must be an IP, CIDR or host; got {a!r}"
            )
    inbound = InboundTrunk(
        numbers=_numbers(inbound_raw, "numbers", ip, required=True),
        allowedAddresses=tuple(addresses),
        allowedNumbers=_numbers(inbound_raw, "allowedNumbers", ip, required=False),
        auth=_sip_auth(inbound_raw.get("authSecret"), f"{ip}.authSecret"),
    )
    outbound = None
    if d.get("outbound") is not None:
        op = f"{path}.outbound"
        o = _obj(d.get("outbound"), op)
        transport = o.get("transport", "auto")
        if transport not in SIP_TRANSPORTS:
            raise SpecError(
                f"{op}.transport", f"must be one of {', '.join(SIP_TRANSPORTS)}; got {transport!r}"
            )
        outbound = OutboundTrunk(
            address=cast(str, _str(o, "address", op, required=True, pattern=SIP_HOST_RE)),
            numbers=_numbers(o, "numbers", op, required=True),
            transport=transport,
            auth=_sip_auth(o.get("authSecret"), f"{op}.authSecret"),
        )
    adopt = d.get("adopt", False)
    if not isinstance(adopt, bool):
        raise SpecError(f"{path}.adopt", f"must be true or false; got {adopt!r}")
    return Telephony(inbound, _dispatch(d.get("dispatch"), name), outbound, adopt)


def parse_spec(name: str, namespace: str, spec: Any) -> VoiceAgentSpec:
    """Validate a VoiceAgent's spec into typed data, or raise `SpecError`."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not DNS1035_RE.match(name):
        raise SpecError(
            "metadata.name",
            f"must be a DNS-1035 label of at most {MAX_NAME} characters "
            "(it names the worker Deployment and its Service)",
        )
    d = _obj(spec, "spec", required=True)
    livekit = _livekit(d.get("livekit"))
    agent = _agent(d.get("agent"))
    api_key = _api_key(d, agent)
    config, tool_headers = _config(name, namespace, d, livekit)
    return VoiceAgentSpec(
        name=name,
        namespace=namespace,
        livekit=livekit,
        apiKeySecret=api_key,
        config=config,
        agent=agent,
        tool_headers=tool_headers,
        replicas=_int(d, "replicas", "spec", None, 0, MAX_REPLICAS),
        autoscaling=_autoscaling(d.get("autoscaling")),
        disruption=_disruption(d.get("disruptionBudget")),
        template=_template(d.get("template")),
        telephony=_telephony(d.get("telephony"), name),
    )


class ParsedSpec:
    """A VoiceAgent's spec parsed once per generation, for daemons that see kopf's live
    view of it: None while it does not parse (the reconciler reports why)."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self._generation: Any = None
        self._parsed: VoiceAgentSpec | None = None

    def of(self, body: Mapping[str, Any], spec: Mapping[str, Any]) -> VoiceAgentSpec | None:
        generation = body.get("metadata", {}).get("generation")
        if generation is None or generation != self._generation:
            self._generation = generation
            try:
                self._parsed = parse_spec(self.name, self.namespace, dict(spec))
            except SpecError:
                self._parsed = None
        return self._parsed
