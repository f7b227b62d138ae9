"""The VoiceAgent CustomResourceDefinition, written in Python; `crds/voiceagent.yaml` is its output.

Why Python: the schema shares its limits (lengths, ranges, reserved names, voices) with
`spec.py` and the contract, so it imports them instead of repeating them, and every field
gets a description through the same small helpers. `python -m crdgen`
prints the YAML; `tests/operator/test_crd.py` fails when the checked-in file differs, and
checks that the schema's defaults are the ones `spec.py` and the contract assume.
`python -m crdgen --docs` prints the field reference, docs/voiceagent.md
(`crd_docs.py`), from the same schema.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Final

import yaml

from voicefleet_contract import (
    AGENT_MODULE_RE,
    CONFIG_MOUNT_PATH,
    GROUP,
    JOB_EXECUTORS,
    KIND,
    MAX_AGENT_MODULE,
    PLURAL,
    SECRET_ENV,
    VERSION,
)
from voicefleet_contract.capacity import (
    DEFAULT_TARGET_LOAD,
    DEFAULT_WORKER_REQUESTS,
    MAX_TARGET_LOAD,
    MIN_TARGET_LOAD,
)
from voicefleet_contract.config import (
    HEADER_NAME_RE,
    MAX_TOOL_HEADERS,
    RESERVED_TOOL_HEADERS,
    TOOL_NAME_RE,
)
from voicefleet_contract.fields import (
    FAILOVER,
    MODALITIES,
    MODEL,
    OBSERVABILITY,
    OPENAI_VOICES,
    SESSIONS,
    TRANSCRIPTION,
    TURN_DETECTION,
    Field,
)
from voicefleet_contract.netguard import METADATA_HOSTS
from voicefleet_operator.spec import (
    AGENT_NAME_RE,
    AUTOSCALING_MODES,
    DISPATCH_TYPES,
    DNS1123_LABEL_RE,
    DNS1123_SUBDOMAIN_RE,
    ENV_FROM_SPEC,
    ENV_NAME_RE,
    IMAGE_RE,
    MAX_ADDRESSES,
    MAX_CONTAINERS,
    MAX_NAME,
    MAX_NUMBERS,
    MAX_REPLICAS,
    MAX_TOOLS,
    MAX_VOLUMES,
    PHONE_RE,
    PIN_RE,
    PULL_POLICIES,
    QUANTITY_RE,
    RESERVED_CONTAINERS,
    RESERVED_ENV,
    RESERVED_LABELS,
    RESERVED_VOLUMES,
    ROOM_RE,
    SECRET_KEY_RE,
    SIP_ADDRESS_RE,
    SIP_HOST_RE,
    SIP_TRANSPORTS,
    TOOL_HEADER_ENV_PREFIX,
)

Schema = dict[str, Any]
SHORT_NAME: Final = "va"
URL_SCHEMES_RE: Final = "^(wss?|https?)://[^/\\s]+"
HTTP_URL_RE: Final = "^https?://[^/\\s]+"


def _cel_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in sorted(items)) + "]"


def rule(
    expr: str,
    message: str | None = None,
    *,
    message_expression: str | None = None,
    field_path: str | None = None,
    reason: str | None = None,
) -> Schema:
    r: Schema = {"rule": expr}
    if message:
        r["message"] = message
    if message_expression:
        r["messageExpression"] = message_expression
    if field_path:
        r["fieldPath"] = field_path
    if reason:
        r["reason"] = reason
    return r


def string(description: str, **kw: Any) -> Schema:
    return {"type": "string", "description": description, **kw}


def integer(description: str, lo: int | None = None, hi: int | None = None, **kw: Any) -> Schema:
    s: Schema = {"type": "integer", "description": description, **kw}
    if lo is not None:
        s["minimum"] = lo
    if hi is not None:
        s["maximum"] = hi
    return s


def number(description: str, lo: float | None = None, hi: float | None = None, **kw: Any) -> Schema:
    s: Schema = {"type": "number", "description": description, **kw}
    if lo is not None:
        s["minimum"] = lo
    if hi is not None:
        s["maximum"] = hi
    return s


def boolean(description: str, default: bool) -> Schema:
    return {"type": "boolean", "description": description, "default": default}


def field_schema(f: Field) -> Schema:
    """One field of the contract's table (fields.py) as OpenAPI."""
    s: Schema = {"type": f.kind, "description": f.description}
    optional = {
        "enum": list(f.enum) or None,
        "default": f.default,
        "minimum": f.minimum,
        "maximum": f.maximum,
        "maxLength": f.max_length,
        "pattern": f.pattern,
    }
    return s | {k: v for k, v in optional.items() if v is not None}


def table_schema(table: tuple[Field, ...]) -> dict[str, Schema]:
    return {f.name: field_schema(f) for f in table}


def obj(
    description: str,
    properties: dict[str, Schema],
    *,
    required: tuple[str, ...] = (),
    rules: tuple[Schema, ...] = (),
    default: dict[str, Any] | None = None,
) -> Schema:
    s: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        s["required"] = list(required)
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    if default is not None:
        # Spelled out in full: the API server checks CEL rules against a default as
        # written, without defaulting inside it first.
        s["default"] = apply_defaults(s, default)
    return s


def free_object(description: str) -> Schema:
    """A Kubernetes type passed through verbatim; the API server validates it on the Deployment."""
    return {
        "type": "object",
        "description": description,
        "x-kubernetes-preserve-unknown-fields": True,
    }


def array(description: str, items: Schema, max_items: int, **kw: Any) -> Schema:
    return {
        "type": "array",
        "description": description,
        "items": items,
        "maxItems": max_items,
        **kw,
    }


def string_map(description: str, max_properties: int = 64, value_max: int = 4096) -> Schema:
    return {
        "type": "object",
        "description": description,
        "maxProperties": max_properties,
        "additionalProperties": {"type": "string", "maxLength": value_max},
    }


def quantity() -> Schema:
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_RE.pattern,
        "x-kubernetes-int-or-string": True,
    }


def url(description: str, pattern: str, *, allow_empty: bool = False) -> Schema:
    # A raw CEL string: the pattern holds regex escapes CEL strings would reject.
    check = f"isURL(self) && self.matches(r'{pattern}')"
    if allow_empty:
        check = f"self == '' || ({check})"
    scheme = "ws, wss, http or https" if "wss" in pattern else "http or https"
    return string(
        description,
        maxLength=2048,
        **{
            "x-kubernetes-validations": [
                rule(check, message_expression=f"'must be a {scheme} URL, got: ' + self")
            ]
        },
    )


# --- spec -------------------------------------------------------------------------------


def livekit_schema() -> Schema:
    return obj(
        "How workers reach the LiveKit server they register with.",
        {
            "url": url(
                "LiveKit server URL (ws, wss, http or https), e.g. ws://livekit.livekit.svc:7880.",
                URL_SCHEMES_RE,
            ),
            "credentialsSecret": string(
                "Name of a Secret in the VoiceAgent's namespace holding the LiveKit API key "
                "and secret. Workers get them as LIVEKIT_API_KEY/LIVEKIT_API_SECRET via "
                "secretKeyRef, never as literal values.",
                maxLength=253,
                pattern=DNS1123_SUBDOMAIN_RE.pattern,
            ),
            "apiKeyKey": string(
                "Key in credentialsSecret holding the API key.",
                default="apiKey",
                maxLength=253,
                pattern=SECRET_KEY_RE.pattern,
            ),
            "apiSecretKey": string(
                "Key in credentialsSecret holding the API secret.",
                default="apiSecret",
                maxLength=253,
                pattern=SECRET_KEY_RE.pattern,
            ),
            "targetLoad": number(
                "The LiveKit server's `agents.target_load` (its default is 0.7): the server "
                "offers a job only to workers reporting a load below it. Workers report "
                "targetLoad x sessions / maxPerWorker, so LiveKit dispatches exactly "
                "maxPerWorker sessions to each. Set it to what your server is configured "
                "with.",
                MIN_TARGET_LOAD,
                MAX_TARGET_LOAD,
                default=DEFAULT_TARGET_LOAD,
            ),
        },
        required=("url", "credentialsSecret"),
    )


def turn_detection_schema() -> Schema:
    return obj(
        "How the model decides the caller finished speaking (Realtime turn_detection).",
        table_schema(TURN_DETECTION),
        rules=(
            rule(
                "!has(self.eagerness) || self.type == 'semantic_vad'",
                "eagerness is only valid with type semantic_vad",
                field_path=".eagerness",
            ),
        ),
        default={},
    )


def model_schema() -> Schema:
    voices = ", ".join(OPENAI_VOICES)
    return obj(
        "The speech-to-speech model and every OpenAI Realtime session parameter, passed "
        "through to the worker's agent.json.",
        {
            **table_schema(MODEL),
            "modalities": array(
                "Output modalities: audio, text or both.",
                string("A modality.", enum=list(MODALITIES)),
                len(MODALITIES),
                default=["audio"],
                minItems=1,
                **{"x-kubernetes-list-type": "set"},
            ),
            "turnDetection": turn_detection_schema(),
            "inputAudioTranscription": obj(
                "Transcribe the caller's audio (for transcripts and failover summaries).",
                table_schema(TRANSCRIPTION),
            ),
            "apiKeySecret": obj(
                "The Secret holding the API key; workers get it as OPENAI_API_KEY via "
                "secretKeyRef, never as a literal value.",
                {
                    "name": string(
                        "Secret name, in the VoiceAgent's namespace.",
                        maxLength=253,
                        pattern=DNS1123_SUBDOMAIN_RE.pattern,
                    ),
                    "key": string(
                        "Key in the Secret.",
                        default="apiKey",
                        maxLength=253,
                        pattern=SECRET_KEY_RE.pattern,
                    ),
                },
                required=("name",),
            ),
            "baseURL": url(
                "An OpenAI-compatible endpoint (Azure OpenAI, a proxy, the testbed's "
                "stand-in); empty means OpenAI. http(s) becomes ws(s) for the Realtime "
                "socket at <baseURL>/realtime.",
                URL_SCHEMES_RE,
                allow_empty=True,
            ),
        },
        required=("apiKeySecret",),
        rules=(
            rule(
                "(has(self.baseURL) && self.baseURL != '') || "
                f"self.voice in {_cel_list(OPENAI_VOICES)}",
                message_expression=(
                    f"'unknown voice ' + self.voice + '; OpenAI Realtime voices are {voices} "
                    "(any voice is accepted when model.baseURL names a compatible endpoint)'"
                ),
                field_path=".voice",
            ),
        ),
    )


# What the API server can tell of a link-local or metadata host, on the URL as written
# (netguard.py judges the rest, and the worker again after DNS): 169.254.x, fe80::/10,
# IPv4-mapped link-local, Alibaba's and AWS's IPv6 metadata addresses, hosts written as
# one integer or in hex, and the metadata services' names; after any user@. One regex on
# the string itself: CEL's cost estimate stays bounded by its maxLength (a rule on
# url(self).getHostname() is estimated as unbounded and refused by the API server).
_HOST_END: Final = r"\.?([:/?#]|$)"
METADATA_URL_RE: Final = (
    r"(?i)^https?://([^/?#@]*@)?("
    r"\[?(169\.254\.|fe[89ab][0-9a-f]:|::ffff:169\.254\.|::ffff:a9fe:|fd00:ec2::254\])"
    r"|(100\.100\.100\.200|0x[0-9a-f.x]*|[0-9]+"
    + "".join("|" + h.replace(".", r"\.") for h in sorted(METADATA_HOSTS))
    + ")"
    + _HOST_END
    + ")"
)


def tool_url_schema() -> Schema:
    s = url("HTTP(S) endpoint the worker calls; never a link-local or cloud metadata address.",
            HTTP_URL_RE)  # fmt: skip
    s["x-kubernetes-validations"].append(
        rule(
            f"!self.matches(r'{METADATA_URL_RE}')",
            message_expression=(
                "'must not point at a link-local or cloud metadata address (where node "
                "credentials live), got: ' + self"
            ),
        )
    )
    return s


def tool_header_schema() -> Schema:
    reserved = _cel_list(RESERVED_TOOL_HEADERS)
    return obj(
        "An HTTP header sent with every call. Its value comes from a Secret key, never a "
        "literal: agent.json only names the environment variable that carries it.",
        {
            "name": string(
                "Header name, e.g. Authorization.", maxLength=128, pattern=HEADER_NAME_RE.pattern
            ),
            "valueFrom": obj(
                "Where the value comes from.",
                {
                    "secretKeyRef": obj(
                        "A key of a Secret in the VoiceAgent's namespace (its whole value is "
                        "sent, e.g. 'Bearer <token>').",
                        {
                            "name": string(
                                "Secret name.",
                                maxLength=253,
                                pattern=DNS1123_SUBDOMAIN_RE.pattern,
                            ),
                            "key": string(
                                "Key in the Secret.", maxLength=253, pattern=SECRET_KEY_RE.pattern
                            ),
                        },
                        required=("name", "key"),
                    )
                },
                required=("secretKeyRef",),
            ),
        },
        required=("name", "valueFrom"),
        rules=(
            rule(
                f"!(self.name.lowerAscii() in {reserved})",
                message_expression="self.name + ' is set by the worker or by HTTP itself'",
                field_path=".name",
            ),
        ),
    )


def tool_schema() -> Schema:
    return obj(
        "A function the model may call; the worker POSTs its JSON arguments to url and "
        "returns the response body to the model.",
        {
            "name": string(
                "Function name the model sees: letters, digits, _ and -, starting with a letter "
                "or _.",
                maxLength=64,
                pattern=TOOL_NAME_RE.pattern,
            ),
            "description": string("What the tool does, for the model.", maxLength=4096),
            "url": tool_url_schema(),
            "parameters": {
                **free_object("JSON Schema of the arguments; must be an object schema."),
                # Declared so the server can check it; everything else passes through.
                "properties": {
                    "type": string("Always object: a tool takes named arguments.", enum=["object"])
                },
            },
            "timeoutSeconds": number("Call timeout.", 0.1, 300.0, default=10.0),
            "headers": array(
                "HTTP headers sent with every call (e.g. an API token), from Secrets.",
                tool_header_schema(),
                MAX_TOOL_HEADERS,
                **{
                    "x-kubernetes-validations": [
                        rule(
                            "self.all(h, self.exists_one(o, o.name.lowerAscii() == "
                            "h.name.lowerAscii()))",
                            "header names must be unique (case does not count)",
                        )
                    ]
                },
            ),
        },
        required=("name", "description", "url"),
    )


def autoscaling_schema() -> Schema:
    modes = "|".join(AUTOSCALING_MODES)
    return obj(
        "How many workers run. builtin: voicefleet scales on live sessions; hpa/keda: an "
        "external autoscaler owns the Deployment's replicas; none: spec.replicas (kubectl "
        "scale) decides.",
        {
            "mode": string(
                f"Autoscaler: {modes}.", enum=list(AUTOSCALING_MODES), default="builtin"
            ),
            "minReplicas": integer(
                "Fewest workers (0 scales to zero).", 0, MAX_REPLICAS, default=1
            ),
            "maxReplicas": integer("Most workers.", 1, MAX_REPLICAS, default=10),
            "targetUtilization": number(
                "Target busy fraction of session capacity, 0.1 to 1.", 0.1, 1.0, default=0.7
            ),
            "bufferSessions": integer(
                "Free sessions to keep ready on top of the target, for bursts.",
                0,
                100_000,
                default=0,
            ),
            "scaleUpStabilizationSeconds": integer(
                "Wait before scaling up again.", 0, 3600, default=0
            ),
            "scaleDownStabilizationSeconds": integer(
                "Scale down only to the highest recommendation seen in this window.",
                0,
                3600,
                default=300,
            ),
        },
        rules=(
            rule(
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must be <= maxReplicas",
                field_path=".minReplicas",
            ),
            rule(
                "self.mode != 'hpa' || self.minReplicas >= 1",
                "minReplicas must be >= 1 in hpa mode (the HPA cannot scale to zero)",
                field_path=".minReplicas",
            ),
        ),
        default={},
    )


def env_schema() -> Schema:
    reserved_secret = _cel_list(SECRET_ENV)
    reserved_other = _cel_list(RESERVED_ENV - SECRET_ENV)
    from_spec = [
        rule(
            f"self.name != '{env}'",
            f"{env} is set from {field}; set it there",
            field_path=".name",
        )
        for env, field in sorted(ENV_FROM_SPEC.items())
    ]
    return array(
        "Extra environment variables for the worker container (Kubernetes EnvVar).",
        obj(
            "An environment variable.",
            {
                "name": string("Variable name.", maxLength=255, pattern=ENV_NAME_RE.pattern),
                "value": string("Literal value.", maxLength=32_768),
                "valueFrom": free_object("Source of the value (Kubernetes EnvVarSource)."),
            },
            required=("name",),
            rules=(
                rule(
                    f"!(self.name in {reserved_secret})",
                    message_expression=(
                        "self.name + ' carries a secret and is set by the operator from "
                        "spec.livekit.credentialsSecret or spec.model.apiKeySecret; it cannot "
                        "be set here, least of all as a literal value'"
                    ),
                    field_path=".name",
                ),
                rule(
                    f"!(self.name in {reserved_other})",
                    message_expression=(
                        "self.name + ' is set by the operator and cannot be overridden'"
                    ),
                    field_path=".name",
                ),
                *from_spec,
                rule(
                    f"!self.name.startsWith('{TOOL_HEADER_ENV_PREFIX}')",
                    message_expression=(
                        "self.name + ' is set by the operator (tool headers) and cannot be "
                        "overridden'"
                    ),
                    field_path=".name",
                ),
                rule(
                    "!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both"
                ),
            ),
        ),
        128,
    )


def named_objects(
    description: str, item: str, max_items: int, reserved: Iterable[str], **props: Schema
) -> Schema:
    """A list of Kubernetes objects passed through as written, each with a unique `name`
    that is not one of the operator's own (`reserved`)."""
    return {
        **array(
            description,
            {
                "type": "object",
                "description": item,
                "required": ["name", *props],
                "properties": {
                    "name": string(
                        "Name (a DNS-1123 label).", maxLength=63, pattern=DNS1123_LABEL_RE.pattern
                    ),
                    **props,
                },
                "x-kubernetes-preserve-unknown-fields": True,
                "x-kubernetes-validations": [
                    rule(
                        f"!(self.name in {_cel_list(reserved)})",
                        f"the name is the operator's own: not {', '.join(sorted(reserved))}",
                        field_path=".name",
                    )
                ],
            },
            max_items,
        ),
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
    }


def template_schema() -> Schema:
    reserved_labels = _cel_list(RESERVED_LABELS)
    return obj(
        "Overrides for the worker pods.",
        {
            "image": string(
                "Worker image; default: the operator's --default-image (the stock agent).",
                maxLength=1024,
                pattern=IMAGE_RE.pattern,
            ),
            "imagePullPolicy": string("Image pull policy.", enum=list(PULL_POLICIES)),
            "imagePullSecrets": array(
                "Secrets for pulling the image.",
                obj(
                    "A Secret reference.",
                    {"name": string("Secret name.", maxLength=253)},
                    required=("name",),
                ),
                16,
            ),
            "resources": obj(
                "Worker container resources; default requests cpu "
                f"{DEFAULT_WORKER_REQUESTS['cpu']}, memory {DEFAULT_WORKER_REQUESTS['memory']} "
                "(measured: docs/worker.md).",
                {
                    "requests": {
                        "type": "object",
                        "description": "Minimum resources (quantities).",
                        "maxProperties": 16,
                        "additionalProperties": quantity(),
                    },
                    "limits": {
                        "type": "object",
                        "description": "Maximum resources (quantities).",
                        "maxProperties": 16,
                        "additionalProperties": quantity(),
                    },
                },
            ),
            "env": env_schema(),
            "nodeSelector": string_map("Node labels the workers must run on.", value_max=63),
            "tolerations": array(
                "Taints the workers tolerate (Kubernetes Toleration).",
                obj(
                    "A toleration.",
                    {
                        "key": string("Taint key.", maxLength=316),
                        "operator": string("Exists or Equal.", enum=["Exists", "Equal"]),
                        "value": string("Taint value.", maxLength=63),
                        "effect": string(
                            "Taint effect.", enum=["NoSchedule", "PreferNoSchedule", "NoExecute"]
                        ),
                        "tolerationSeconds": integer("How long to tolerate a NoExecute taint."),
                    },
                ),
                64,
            ),
            "affinity": free_object("Pod affinity (Kubernetes Affinity)."),
            "topologySpreadConstraints": array(
                "How workers spread over zones and nodes (Kubernetes TopologySpreadConstraint).",
                free_object("A topology spread constraint."),
                16,
            ),
            "serviceAccountName": string(
                "Service account of the workers (its token is mounted only when this is set).",
                maxLength=253,
                pattern=DNS1123_SUBDOMAIN_RE.pattern,
            ),
            "priorityClassName": string(
                "Priority class of the workers.",
                maxLength=253,
                pattern=DNS1123_SUBDOMAIN_RE.pattern,
            ),
            "annotations": string_map("Extra pod annotations."),
            "labels": {
                **string_map("Extra pod labels (not the selector labels).", value_max=63),
                "x-kubernetes-validations": [
                    rule(
                        f"!self.exists(k, k in {reserved_labels})",
                        "app.kubernetes.io/name and app.kubernetes.io/instance are the pod "
                        "selector; the operator sets them",
                    )
                ],
            },
            "securityContext": free_object(
                "Pod security context (Kubernetes PodSecurityContext), merged key by key over "
                "the default, which passes Pod Security restricted: runAsNonRoot true, "
                "runAsUser and runAsGroup 10001 (the worker image's user), seccompProfile "
                "RuntimeDefault. A key set here replaces the default's whole."
            ),
            "containerSecurityContext": free_object(
                "Worker container security context, merged key by key over the default, "
                "which passes Pod Security restricted: allowPrivilegeEscalation false, "
                "capabilities drop ALL. A key set here replaces the default's whole (a "
                "capabilities without drop ALL fails restricted)."
            ),
            "volumes": named_objects(
                "Extra pod volumes (Kubernetes Volume), e.g. a ConfigMap with the CA bundle "
                "of a LiveKit behind TLS with a private CA (examples/livekit-private-ca.yaml).",
                "A volume.",
                MAX_VOLUMES,
                RESERVED_VOLUMES,
            ),
            "volumeMounts": {
                **array(
                    "Extra mounts of the worker container (Kubernetes VolumeMount), each of a "
                    "volume in volumes.",
                    {
                        "type": "object",
                        "description": "A volume mount.",
                        "required": ["name", "mountPath"],
                        "properties": {
                            "name": string("The volume's name.", maxLength=63),
                            "mountPath": string(
                                "Where, an absolute path (not the agent configuration's, "
                                f"{CONFIG_MOUNT_PATH}).",
                                maxLength=1024,
                                pattern="^/",
                            ),
                        },
                        "x-kubernetes-preserve-unknown-fields": True,
                        "x-kubernetes-validations": [
                            rule(
                                f"self.mountPath != '{CONFIG_MOUNT_PATH}' && "
                                f"!self.mountPath.startsWith('{CONFIG_MOUNT_PATH}/')",
                                f"{CONFIG_MOUNT_PATH} holds the agent configuration",
                                field_path=".mountPath",
                            )
                        ],
                    },
                    MAX_VOLUMES,
                ),
            },
            "initContainers": named_objects(
                "Init containers (Kubernetes Container), run before the worker; one with "
                "restartPolicy Always is a native sidecar. The worker container's default "
                "security context applies under each one's own.",
                "A container.",
                MAX_CONTAINERS,
                RESERVED_CONTAINERS,
                image=string("Image.", maxLength=1024, pattern=IMAGE_RE.pattern),
            ),
            "containers": named_objects(
                "Sidecar containers (Kubernetes Container) beside the worker; the worker "
                "container's default security context applies under each one's own.",
                "A container.",
                MAX_CONTAINERS,
                RESERVED_CONTAINERS,
                image=string("Image.", maxLength=1024, pattern=IMAGE_RE.pattern),
            ),
        },
        default={},
        rules=(
            rule(
                "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
                "self.volumes.exists(v, v.name == m.name))",
                "every volumeMounts[].name must be a volume in volumes",
                field_path=".volumeMounts",
            ),
            rule(
                "!has(self.containers) || !has(self.initContainers) || "
                "self.containers.all(c, !self.initContainers.exists(i, i.name == c.name))",
                "a container name is used in both containers and initContainers",
                field_path=".containers",
            ),
        ),
    )


def phone_numbers(description: str, *, min_items: int) -> Schema:
    return array(
        description,
        string(
            "A phone number, E.164 digits with or without +.",
            maxLength=21,
            pattern=PHONE_RE.pattern,
        ),
        MAX_NUMBERS,
        minItems=min_items,
        **{
            "x-kubernetes-validations": [
                rule("self.all(n, self.exists_one(m, m == n))", "a number is listed twice")
            ]
        },
    )


def sip_auth_schema(what: str) -> Schema:
    return obj(
        f"SIP digest credentials {what}, from a Secret in the VoiceAgent's namespace.",
        {
            "name": string(
                "The Secret's name.", maxLength=253, pattern=DNS1123_SUBDOMAIN_RE.pattern
            ),
            "usernameKey": string("Key of the user name.", maxLength=253, default="username"),
            "passwordKey": string("Key of the password.", maxLength=253, default="password"),
        },
        required=("name",),
    )


def telephony_schema() -> Schema:
    return obj(
        "Phone calls to this agent through LiveKit SIP (needs LiveKit with Redis and the "
        "livekit/sip bridge): an inbound trunk for the numbers, a dispatch rule that puts "
        "each caller in a room and dispatches this agent by name, optionally an outbound "
        "trunk for calls the agent places. The operator creates them through LiveKit's SIP "
        "API, updates them in place, and deletes them with the VoiceAgent (docs/telephony.md).",
        {
            "inbound": obj(
                "The inbound trunk: which numbers, from where.",
                {
                    "numbers": phone_numbers(
                        "Numbers callers dial (the trunk's numbers).", min_items=1
                    ),
                    "allowedAddresses": array(
                        "SIP provider addresses (IP, CIDR or host) calls may come from; "
                        "empty: any (then use authSecret).",
                        string(
                            "An IP, CIDR or host.", maxLength=257, pattern=SIP_ADDRESS_RE.pattern
                        ),
                        MAX_ADDRESSES,
                    ),
                    "allowedNumbers": phone_numbers(
                        "Caller numbers accepted; empty: any.", min_items=0
                    ),
                    "authSecret": sip_auth_schema("the provider must present"),
                },
                required=("numbers",),
            ),
            "dispatch": obj(
                "The dispatch rule: the room each call goes to.",
                {
                    "type": string(
                        "individual: a new room per call (<roomPrefix>_<caller>_<random>); "
                        "direct: every call in roomName.",
                        enum=list(DISPATCH_TYPES),
                        default="individual",
                    ),
                    "roomPrefix": string(
                        "individual: room name prefix; default call-<metadata.name>.",
                        maxLength=64,
                        pattern=ROOM_RE.pattern,
                    ),
                    "roomName": string("direct: the room.", maxLength=128, pattern=ROOM_RE.pattern),
                    "pin": string(
                        "Callers must enter this PIN first.", maxLength=12, pattern=PIN_RE.pattern
                    ),
                    "metadata": string("Job metadata the agent receives.", maxLength=4096),
                    "attributes": string_map("Attributes set on the caller's participant."),
                },
                rules=(
                    rule(
                        "self.type != 'direct' || (has(self.roomName) && self.roomName != '')",
                        "roomName is required for type direct",
                        field_path=".roomName",
                    ),
                    rule(
                        "self.type != 'individual' || !has(self.roomName) || self.roomName == ''",
                        "roomName is for type direct; individual uses roomPrefix",
                        field_path=".roomName",
                    ),
                ),
                default={},
            ),
            "outbound": obj(
                "An outbound trunk, for calls the agent places (CreateSIPParticipant).",
                {
                    "address": string(
                        "The SIP provider's host (and port).",
                        maxLength=253,
                        pattern=SIP_HOST_RE.pattern,
                    ),
                    "numbers": phone_numbers("Caller IDs calls go out with.", min_items=1),
                    "transport": string(
                        "SIP transport.", enum=list(SIP_TRANSPORTS), default="auto"
                    ),
                    "authSecret": sip_auth_schema("to present to the provider"),
                },
                required=("address", "numbers"),
            ),
            "adopt": boolean(
                "Take over a trunk or dispatch rule that already routes these numbers "
                "(edited in place and deleted with the VoiceAgent); false: refuse, naming it "
                "(TelephonyReady=False, reason Conflict).",
                False,
            ),
        },
        required=("inbound",),
    )


def agent_schema() -> Schema:
    return obj(
        "What code the workers run. Unset: the stock OpenAI Realtime agent configured by "
        "spec.model. module: a livekit-agents agent of your own in the image, run unchanged "
        "(docs/worker.md, Bring your own agent).",
        {
            "module": string(
                "<module>[:<attribute>] of an agent written as livekit-agents' examples are "
                "(an AgentServer with @server.rtc_session, or entrypoint(ctx) with an "
                "optional prewarm), importable in the image; workers get it as "
                "VOICEFLEET_AGENT. With it spec.model is optional: the module's plugins read "
                "their own keys (spec.template.env from Secrets).",
                maxLength=MAX_AGENT_MODULE,
                pattern=AGENT_MODULE_RE.pattern,
            ),
            "jobExecutor": string(
                "Where jobs run: process (livekit-agents' job processes: a crash or a "
                "GIL-bound plugin takes one call) or thread (cheaper, measured in "
                "docs/worker.md). Default: process for a module, thread for the stock agent.",
                enum=list(JOB_EXECUTORS),
            ),
        },
    )


def spec_schema() -> Schema:
    return obj(
        "The desired agent fleet.",
        {
            "agentName": string(
                "LiveKit agent_name the workers register under (explicit dispatch); "
                "default: metadata.name. One VoiceAgent per name and LiveKit server in the "
                "cluster: a second one waits (Ready=False, AgentNameConflict) until the "
                "first lets go.",
                maxLength=63,
                pattern=AGENT_NAME_RE.pattern,
            ),
            "replicas": integer(
                "Workers when autoscaling.mode is none; kubectl scale writes it through the "
                "scale subresource. Ignored by hpa and keda modes.",
                0,
                MAX_REPLICAS,
            ),
            "livekit": livekit_schema(),
            "agent": agent_schema(),
            "model": model_schema(),
            "tools": array(
                "HTTP tools the model may call (function calling without code).",
                tool_schema(),
                MAX_TOOLS,
                **{
                    "x-kubernetes-validations": [
                        rule(
                            "self.all(t, self.exists_one(u, u.name == t.name))",
                            "tool names must be unique",
                        )
                    ]
                },
            ),
            "sessions": obj(
                "Session capacity of one worker and how long it drains.",
                table_schema(SESSIONS),
                default={},
            ),
            "autoscaling": autoscaling_schema(),
            "failover": obj(
                "Re-dispatch of sessions whose worker died.", table_schema(FAILOVER), default={}
            ),
            "observability": obj("What workers record.", table_schema(OBSERVABILITY), default={}),
            "disruptionBudget": obj(
                "The PodDisruptionBudget of the workers (evicted workers still drain).",
                {
                    "maxUnavailable": {
                        "description": "Workers that may be evicted at once (a number or a "
                        "percentage).",
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                        "pattern": "^[0-9]{1,3}%$",
                        "x-kubernetes-int-or-string": True,
                        "x-kubernetes-validations": [
                            rule(
                                "type(self) == string || int(self) >= 0",
                                "must be a number >= 0 or a percentage",
                            )
                        ],
                        "default": 1,
                    }
                },
                default={},
            ),
            "template": template_schema(),
            "telephony": telephony_schema(),
        },
        required=("livekit",),
        rules=(
            rule(
                "has(self.model) || (has(self.agent) && has(self.agent.module))",
                "spec.model is required unless spec.agent.module names an agent of your own",
                reason="FieldValueRequired",
            ),
        ),
    )


# --- status -----------------------------------------------------------------------------


def condition_schema() -> Schema:
    return obj(
        "A condition (Kubernetes metav1.Condition).",
        {
            "type": string("Ready, Progressing or Degraded.", maxLength=316),
            "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": string("CamelCase reason.", maxLength=1024),
            "message": string("Human readable detail.", maxLength=32_768),
            "lastTransitionTime": string("When status last changed.", format="date-time"),
            "observedGeneration": integer("Generation the condition was computed for.", 0),
        },
        required=("type", "status"),
    )


def status_schema() -> Schema:
    return obj(
        "Observed state, written by the operator.",
        {
            "observedGeneration": integer("Generation of the spec last reconciled.", 0),
            "conditions": {
                **array("Ready, Progressing, Degraded.", condition_schema(), 16),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "agentName": string("LiveKit agent_name the workers register under."),
            "replicas": integer("Worker pods (scale subresource statusReplicasPath)."),
            "readyReplicas": integer("Ready worker pods."),
            "updatedReplicas": integer("Worker pods on the current template."),
            "desiredReplicas": integer("Workers the operator (or autoscaler) wants."),
            "activeSessions": integer("Sessions being served now."),
            "capacity": integer("Sessions the ready workers accept (ready x maxPerWorker)."),
            "selector": string("Pod label selector (scale subresource labelSelectorPath)."),
            "configHash": string("Hash of the rendered agent.json the workers run."),
            "workers": string("ready/desired, for kubectl get."),
            "sessions": string("activeSessions/capacity, for kubectl get."),
            "telephony": obj(
                "spec.telephony as it stands on the LiveKit server (the telephony sync).",
                {
                    "state": string("Synced, Conflict, Error or Removed.", maxLength=32),
                    "message": string("Why, in words.", maxLength=1024),
                    "inboundTrunkId": string("LiveKit's id of the inbound trunk."),
                    "outboundTrunkId": string("LiveKit's id of the outbound trunk."),
                    "dispatchRuleId": string("LiveKit's id of the dispatch rule."),
                    "observedGeneration": integer("Generation of the spec last synced.", 0),
                },
            ),
            "autoscaler": obj(
                "The built-in autoscaler's last decision (mode builtin).",
                {
                    "mode": string("The autoscaling mode that decided."),
                    "desiredReplicas": integer("Workers it wants."),
                    "neededReplicas": integer("Workers demand asks for, before bounds and steps."),
                    "sessions": integer("Sessions counted (an unanswering worker counts as full)."),
                    "capacity": integer("Sessions the ready, non-draining workers accept."),
                    "unansweredWorkers": integer("Workers whose /sessions did not answer in time."),
                    "waitingCalls": integer(
                        "Calls with no agent that LiveKit could not place (every worker "
                        "full), counted as demand until an agent joins."
                    ),
                    "limitedByMax": {
                        "type": "boolean",
                        "description": "Demand needs more than maxReplicas.",
                    },
                    "reason": string("Why, in words.", maxLength=1024),
                },
            ),
        },
    )


def build_crd() -> Schema:
    root = obj(
        "A fleet of real-time voice AI agent workers registered with LiveKit.",
        {
            "apiVersion": string("API version."),
            "kind": string("Kind."),
            # The API server forbids anything but `type` here (it owns metadata's schema).
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        required=("spec",),
        rules=(
            # Only the length: the API server cannot bound metadata.name's size, so a regex
            # here would exceed the CEL cost budget; spec.py checks the DNS-1035 form.
            rule(
                f"self.metadata.name.size() <= {MAX_NAME}",
                f"metadata.name must be at most {MAX_NAME} characters "
                "(it names the worker Deployment and its Service)",
            ),
        ),
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": ["voicefleet"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {
                            "name": "Agent",
                            "type": "string",
                            "jsonPath": ".status.agentName",
                            "description": "LiveKit agent_name",
                        },
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": ".status.workers",
                            "description": "ready/desired workers",
                        },
                        {
                            "name": "Sessions",
                            "type": "string",
                            "jsonPath": ".status.sessions",
                            "description": "active sessions/capacity",
                        },
                        {
                            "name": "Mode",
                            "type": "string",
                            "jsonPath": ".spec.autoscaling.mode",
                            "priority": 1,
                            "description": "autoscaling mode",
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                            "priority": 1,
                            "description": "why (not) Ready",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


HEADER: Final = (
    "# Generated by `python -m crdgen` from crdgen/crd.py;\n"
    "# do not edit (tests/operator/test_crd.py fails when the two differ).\n"
)


def render_yaml() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


# --- structural defaulting, as the API server does it -----------------------------------


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Fill defaults like the API server's structural defaulting (for tests and docs).

    An absent property with a default gets it (the default is itself defaulted), then
    objects recurse into their properties and arrays into their items.
    """
    if isinstance(value, dict):
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = _copy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def openapi_schema() -> Schema:
    crd = build_crd()
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--docs"]:
        from .crd_docs import render

        sys.stdout.write(render(build_crd()))
    elif args:
        sys.exit("usage: python -m crdgen [--docs]")
    else:
        sys.stdout.write(render_yaml())


if __name__ == "__main__":
    main()
