"""docs/voiceagent.md, generated from the CRD schema in `crd.py` (one source).

`python -m crdgen --docs` prints it; `tests/operator/test_crd_docs.py`
fails when the checked-in page differs, and when a field has neither a default, an enum
nor an example in `EXAMPLES`. Descriptions, defaults, limits and validation rules all
come from the schema the API server enforces; only the examples live here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from voicefleet_contract import API_VERSION, KIND

Schema = dict[str, Any]
REPO: Final = Path(__file__).resolve().parents[1]
EXAMPLE_FILE: Final = "examples/voiceagent.yaml"

# An example for every field that has no default and no enum to show one.
EXAMPLES: Final[dict[str, Any]] = {
    "spec.agentName": "support",
    "spec.replicas": 3,
    "spec.livekit.url": "ws://livekit.livekit.svc:7880",
    "spec.livekit.credentialsSecret": "livekit-credentials",
    "spec.agent": {"module": "my_agent:server"},
    "spec.agent.module": "my_agent:server",
    "spec.agent.jobExecutor": "process",
    "spec.model.instructions": "You are a friendly support agent for an online shop.",
    "spec.model.turnDetection.threshold": 0.5,
    "spec.model.turnDetection.prefixPaddingMs": 300,
    "spec.model.turnDetection.silenceDurationMs": 500,
    "spec.model.turnDetection.idleTimeoutMs": 15000,
    "spec.model.inputAudioTranscription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
    "spec.model.inputAudioTranscription.language": "en",
    "spec.model.inputAudioTranscription.prompt": "Order ids look like A-12345.",
    "spec.model.temperature": 0.8,
    "spec.model.speed": 1.1,
    "spec.model.maxSessionDurationSeconds": 1800,
    "spec.model.apiKeySecret": {"name": "openai", "key": "apiKey"},
    "spec.model.apiKeySecret.name": "openai",
    "spec.model.baseURL": "https://my-resource.openai.azure.com/openai",
    "spec.model.azureDeployment": "gpt-realtime",
    "spec.model.apiVersion": "2025-04-01-preview",
    "spec.tools": [
        {
            "name": "lookup_order",
            "description": "Look up an order by id",
            "url": "http://orders.shop.svc/lookup",
            "parameters": {
                "type": "object",
                "properties": {"orderId": {"type": "string"}},
                "required": ["orderId"],
            },
        }
    ],
    "spec.tools[].name": "lookup_order",
    "spec.tools[].description": "Look up an order by id",
    "spec.tools[].url": "http://orders.shop.svc/lookup",
    "spec.tools[].parameters": {
        "type": "object",
        "properties": {"orderId": {"type": "string"}},
        "required": ["orderId"],
    },
    "spec.tools[].headers": [
        {
            "name": "Authorization",
            "valueFrom": {"secretKeyRef": {"name": "orders-api", "key": "token"}},
        }
    ],
    "spec.tools[].headers[].name": "Authorization",
    "spec.tools[].headers[].valueFrom.secretKeyRef.name": "orders-api",
    "spec.tools[].headers[].valueFrom.secretKeyRef.key": "token",
    "spec.disruptionBudget.maxUnavailable": "25%",
    "spec.telephony.inbound.numbers": ["+15550100"],
    "spec.telephony.inbound.allowedAddresses": ["198.51.100.0/24"],
    "spec.telephony.inbound.allowedNumbers": ["+15550123"],
    "spec.telephony.inbound.authSecret.name": "sip-provider",
    "spec.telephony.dispatch.roomPrefix": "support-line",
    "spec.telephony.dispatch.type": "direct",
    "spec.telephony.dispatch.roomName": "hotline",
    "spec.telephony.dispatch.pin": "4321",
    "spec.telephony.dispatch.metadata": '{"line": "support"}',
    "spec.telephony.dispatch.attributes": {"line": "support"},
    "spec.telephony.outbound.address": "sip.provider.example.com",
    "spec.telephony.outbound.numbers": ["+15550100"],
    "spec.telephony.outbound.authSecret.name": "sip-provider",
    "spec.template.image": "ghcr.io/voicefleet/worker:0.1.0",
    "spec.template.imagePullSecrets": [{"name": "registry"}],
    "spec.template.imagePullSecrets[].name": "registry",
    "spec.template.resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
    "spec.template.resources.requests": {"cpu": "500m", "memory": "1Gi"},
    "spec.template.resources.limits": {"memory": "2Gi"},
    "spec.template.env": [{"name": "LOG_LEVEL", "value": "debug"}],
    "spec.template.env[].name": "LOG_LEVEL",
    "spec.template.env[].value": "debug",
    "spec.template.env[].valueFrom": {"configMapKeyRef": {"name": "agent-extra", "key": "level"}},
    "spec.template.nodeSelector": {"pool": "voice"},
    "spec.template.tolerations": [{"key": "voice", "operator": "Exists", "effect": "NoSchedule"}],
    "spec.template.tolerations[].key": "voice",
    "spec.template.tolerations[].value": "true",
    "spec.template.tolerations[].tolerationSeconds": 300,
    "spec.template.affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "support"}},
                    },
                }
            ]
        }
    },
    "spec.template.volumes": [{"name": "livekit-ca", "configMap": {"name": "livekit-ca"}}],
    "spec.template.volumes[].name": "livekit-ca",
    "spec.template.volumeMounts": [
        {"name": "livekit-ca", "mountPath": "/etc/livekit-ca", "readOnly": True}
    ],
    "spec.template.volumeMounts[].name": "livekit-ca",
    "spec.template.volumeMounts[].mountPath": "/etc/livekit-ca",
    "spec.template.initContainers": [
        {
            "name": "wait-for-livekit",
            "image": "busybox:1.37",
            "command": ["sh", "-c", "until nc -z livekit.livekit.svc 7880; do sleep 1; done"],
        }
    ],
    "spec.template.initContainers[].name": "wait-for-livekit",
    "spec.template.initContainers[].image": "busybox:1.37",
    "spec.template.containers": [
        {
            "name": "log-shipper",
            "image": "fluent/fluent-bit:4.0",
            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}},
        }
    ],
    "spec.template.containers[].name": "log-shipper",
    "spec.template.containers[].image": "fluent/fluent-bit:4.0",
    "spec.template.topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "support"}},
        }
    ],
    "spec.template.serviceAccountName": "support-agent",
    "spec.template.priorityClassName": "voice-critical",
    "spec.template.annotations": {"example.com/owner": "support-team"},
    "spec.template.labels": {"team": "support"},
    "spec.template.securityContext": {"fsGroup": 10001},
    "spec.template.containerSecurityContext": {"readOnlyRootFilesystem": True},
}


def _type(s: Schema) -> str:
    if s.get("x-kubernetes-int-or-string"):
        return "integer or string"
    t = s.get("type", "")
    if t == "array":
        return f"list of {_type(s.get('items', {}))}"
    if t == "object" and "additionalProperties" in s:
        return f"map of {_type(s['additionalProperties'])}"
    if t == "object" and s.get("x-kubernetes-preserve-unknown-fields"):
        return "object (passed through)"
    return str(t)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return "`" + _escape(str(text)) + "`"


def _limits(s: Schema) -> list[str]:
    out = []
    if "enum" in s:
        out.append("one of " + ", ".join(_code(v) for v in s["enum"]))
    if "minimum" in s and "maximum" in s:
        out.append(f"{s['minimum']} to {s['maximum']}")
    elif "minimum" in s:
        out.append(f"at least {s['minimum']}")
    elif "maximum" in s:
        out.append(f"at most {s['maximum']}")
    if "maxLength" in s:
        out.append(f"at most {s['maxLength']} characters")
    if "maxItems" in s:
        out.append(f"at most {s['maxItems']} items")
    if "minItems" in s:
        out.append(f"at least {s['minItems']} item{'s' if s['minItems'] > 1 else ''}")
    if "maxProperties" in s:
        out.append(f"at most {s['maxProperties']} entries")
    if "pattern" in s:
        out.append(f"matches {_code(s['pattern'])}")
    out += [_escape(_rule_text(r)) for r in s.get("x-kubernetes-validations", [])]
    return out


def _rule_text(r: Schema) -> str:
    """A CEL rule's message; for a message expression, its literal parts."""
    if r.get("message"):
        text = str(r["message"])
    else:
        parts = re.findall(r"'([^']*)'", r.get("messageExpression", ""))
        text = " ... ".join(p.strip() for p in parts if p.strip()).rstrip(":, ")
        text = text.removesuffix(", got") or str(r["rule"])
    field = str(r.get("fieldPath", "")).lstrip(".")
    return f"{field}: {text}" if field and not text.startswith(field) else text


def example_of(path: str, s: Schema) -> Any:
    """The example shown for a field, or None when it has none (a test forbids that)."""
    if path in EXAMPLES:
        return EXAMPLES[path]
    if "enum" in s:
        return s["enum"][-1] if "default" in s and s["enum"][0] == s["default"] else s["enum"][0]
    if "default" in s:
        return s["default"]
    return None


def _children(s: Schema) -> dict[str, Schema]:
    if s.get("type") == "array":
        return dict(s.get("items", {}).get("properties", {}))
    return dict(s.get("properties", {}))


def _item_path(path: str, s: Schema) -> str:
    return path + "[]" if s.get("type") == "array" else path


def fields(s: Schema, path: str) -> Iterator[tuple[str, Schema, bool]]:
    """(path, schema, required) of every documented field below `path`, depth first."""
    required = set((s.get("items", s) if s.get("type") == "array" else s).get("required", []))
    for name, sub in _children(s).items():
        p = f"{_item_path(path, s)}.{name}"
        yield p, sub, name in required
        if _children(sub) and not sub.get("x-kubernetes-preserve-unknown-fields"):
            yield from fields(sub, p)


def _sections(s: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    """Every object (or list of objects) that gets its own table."""
    yield path, s
    for name, sub in _children(s).items():
        if _children(sub) and not sub.get("x-kubernetes-preserve-unknown-fields"):
            yield from _sections(sub, f"{_item_path(path, s)}.{name}")


def _anchor(path: str) -> str:
    return path.replace(".", "").replace("[]", "").lower()


def _table(s: Schema, path: str, *, inputs: bool = True) -> list[str]:
    """A table of the object's fields; `inputs` (spec) adds default and example columns."""
    item = s.get("items", s) if s.get("type") == "array" else s
    lines = [f"### `{path}`", "", item.get("description") or s.get("description", ""), ""]
    rules = [_escape(_rule_text(r)) for r in item.get("x-kubernetes-validations", [])]
    if s is not item:
        lines += [f"A list ({'; '.join(_limits(s))}). Each item:", ""]
    if rules:
        lines += ["Rules: " + "; ".join(rules) + ".", ""]
    if inputs:
        lines += [
            "| field | type | default | example | description |",
            "| --- | --- | --- | --- | --- |",
        ]
    else:
        lines += ["| field | type | description |", "| --- | --- | --- |"]
    required = set(item.get("required", []))
    for name, sub in _children(s).items():
        p = f"{_item_path(path, s)}.{name}"
        label = f"`{name}`"
        if _children(sub) and not sub.get("x-kubernetes-preserve-unknown-fields"):
            label = f"[`{name}`](#{_anchor(p)})"  # a table of its own below
        if name in required:
            default = "**required**"
        elif "default" in sub and sub.get("type") == "object":
            default = "each field's default"
        elif "default" in sub:
            default = _code(json.dumps(sub["default"]))
        else:
            default = ""
        ex = example_of(p, sub)
        own_table = _children(sub) and not sub.get("x-kubernetes-preserve-unknown-fields")
        example = "see below" if own_table else (_code(ex) if ex is not None else "")
        desc = _escape(" ".join(sub.get("description", "").split()))
        limits = (
            _limits(sub) if sub.get("type") != "object" or "additionalProperties" in sub else []
        )
        if sub.get("type") == "array" and _children(sub):
            limits = [x for x in limits if x.startswith("at most")]
        if limits:
            desc += " <br>" + "; ".join(limits) + "."
        cells = [label, _type(sub), default, example, desc] if inputs else [label, _type(sub), desc]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def render(crd: Schema) -> str:
    version = crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    spec, status = root["properties"]["spec"], root["properties"]["status"]
    names = crd["spec"]["names"]
    example = (REPO / EXAMPLE_FILE).read_text()
    out = [
        "<!-- Generated by `python -m crdgen --docs > docs/voiceagent.md` from",
        "     crdgen/crd.py and examples/voiceagent.yaml; do not edit",
        "     (tests/operator/test_crd_docs.py fails when they differ). -->",
        "",
        f"# The {KIND} resource",
        "",
        f"`{API_VERSION}`, kind `{KIND}`, plural `{names['plural']}`, short name "
        f"`{names['shortNames'][0]}`, namespaced. {root['description']} The operator turns "
        "each one into a worker Deployment (with its agent ConfigMap, a headless metrics "
        "Service, a PodDisruptionBudget and, as the chart installs the operator, a "
        "NetworkPolicy, all owned by the VoiceAgent and garbage-collected with it).",
        "",
        "The API server checks every field below (types, ranges, patterns, the rules): a "
        "rejected object names the field, e.g. `spec.autoscaling.minReplicas: Invalid value: "
        '"object": minReplicas must be <= maxReplicas`. What only the operator can judge (a '
        "Secret or key that does not exist, workers that never become ready) is reported as "
        "`Ready=False` with a reason, and as an Event, while running workers are left as they "
        "are.",
        "",
        f"## Example (`{EXAMPLE_FILE}`)",
        "",
        "```yaml",
        example.rstrip("\n"),
        "```",
        "",
        "## `kubectl get va`",
        "",
        "| column | from | meaning |",
        "| --- | --- | --- |",
        "| NAME | `metadata.name` | |",
    ]
    for c in version["additionalPrinterColumns"]:
        wide = " (with `-o wide`)" if c.get("priority") else ""
        out.append(
            f"| {c['name'].upper()} | `{_escape(c['jsonPath'])}` | "
            f"{c.get('description', 'time since creation')}{wide} |"
        )
    out += [
        "",
        "`kubectl scale va/<name> --replicas=N` writes `spec.replicas` through the scale "
        "subresource; it decides the worker count when `spec.autoscaling.mode` is `none`.",
        "",
        "## Spec",
        "",
    ]
    for p, s in _sections(spec, "spec"):
        out += _table(s, p)
    out += ["## Status", "", "Written by the operator; read-only for users.", ""]
    for p, s in _sections(status, "status"):
        out += _table(s, p, inputs=False)
    out += [
        "### Conditions",
        "",
        "| type | True means | reasons |",
        "| --- | --- | --- |",
        "| `Ready` | enough workers are ready to take calls (all desired ones) | "
        "`WorkersReady`, `ScaledToZero`; False: `WorkersNotReady`, `DeploymentMissing`, "
        "`InvalidSpec`, `SecretNotFound`, `SecretKeyMissing`, `SecretUnreadable`, "
        "`ApplyFailed`, `AgentNameConflict` (another VoiceAgent, named in the message, uses "
        "this agent name on this LiveKit server) |",
        "| `Progressing` | a rollout or scale is under way | `RollingOut`; False: "
        "`RolloutComplete`, `ProgressDeadlineExceeded`, `FailedCreate` (pods cannot be "
        "created), or the blocking problem's reason |",
        "| `Degraded` | something needs a human | `FailedCreate` (the ReplicaSet cannot "
        "create pods: Pod Security, a ResourceQuota; the API's message), `Unschedulable` "
        "(the scheduler's message), `WorkersFailing` (CrashLoopBackOff, ErrImagePull... "
        "per pod), `ProgressDeadlineExceeded`, or the blocking problem's reason; False: "
        "`AsExpected` |",
        "",
        "`FailedCreate` and `Unschedulable` show within seconds, in the API server's and the "
        "scheduler's own words, long before the Deployment's 600 s progress deadline; they "
        "clear once the cause is fixed (see docs/operations.md).",
        "",
        "## Events",
        "",
        "| reason | type | when |",
        "| --- | --- | --- |",
        "| `Created` | Normal | the operator created the VoiceAgent's children |",
        "| `Recreated` | Normal | a child deleted outside the operator was created again |",
        "| `DriftRepaired` | Normal | the Deployment was edited outside the operator and restored |",
        "| `ConfigChanged` | Normal | agent.json changed; the workers roll |",
        "| `SecretsChanged` | Normal | a Secret value the workers use (LiveKit or OpenAI key, "
        "tool header) changed; the workers roll |",
        "| `Updated` | Normal | the Deployment changed for another spec change |",
        "| `Scaled` | Normal | the built-in autoscaler changed the worker count |",
        "| the problem's reason | Warning | a problem appeared or changed (once, not repeated) |",
        "| `Resolved` | Normal | the problem went away |",
        "| `FailedCreate`, `Unschedulable`, `WorkersFailing`, `ProgressDeadlineExceeded` | "
        "Warning | pods cannot be created or placed, workers crash-loop or cannot pull their "
        "image, or a rollout stalls (once per reason) |",
        "| `Recovered` | Normal | the workers stopped failing |",
        "",
    ]
    return "\n".join(out)


def documented_paths(crd: Schema) -> list[tuple[str, Schema, bool]]:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return list(fields(root["properties"]["spec"], "spec"))
