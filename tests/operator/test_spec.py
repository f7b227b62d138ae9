"""spec.py: defaults, and SpecError naming the field for what it rejects."""

from __future__ import annotations

from typing import Any

import pytest

from voicefleet_contract.capacity import DEFAULT_MAX_PER_WORKER
from voicefleet_contract.fields import MAX_INSTRUCTIONS
from voicefleet_operator.spec import SpecError, parse_spec

from .util import full_spec, minimal_spec


def _err(spec: dict[str, Any], name: str = "support") -> SpecError:
    with pytest.raises(SpecError) as e:
        parse_spec(name, "voice", spec)
    return e.value


def test_minimal_spec_gets_defaults() -> None:
    s = parse_spec("support", "voice", minimal_spec())
    assert s.agent_name == "support"
    assert s.config.model.voice == "marin"
    assert s.config.sessions.maxPerWorker == DEFAULT_MAX_PER_WORKER
    assert s.autoscaling.mode == "builtin" and s.autoscaling.minReplicas == 1
    assert s.livekit.apiKeyKey == "apiKey"
    assert s.apiKeySecret and s.apiKeySecret.key == "apiKey"
    assert s.agent.module is None and s.agent.jobExecutor is None  # the stock agent


def test_an_agent_of_ones_own_needs_no_model() -> None:
    spec = {**minimal_spec(), "agent": {"module": "my_agent:server", "jobExecutor": "thread"}}
    del spec["model"]
    s = parse_spec("support", "voice", spec)
    assert s.agent.module == "my_agent:server" and s.agent.jobExecutor == "thread"
    assert s.apiKeySecret is None
    # ... and one that does use OpenAI keeps its key from spec.model.
    s = parse_spec("support", "voice", {**minimal_spec(), "agent": {"module": "my_agent"}})
    assert s.apiKeySecret and s.apiKeySecret.name == "openai"


def test_full_spec_parses() -> None:
    s = parse_spec("support", "voice", full_spec())
    assert s.agent_name == "support-agent"
    assert s.config.tools[0].name == "lookup_order"
    assert s.template.labels == {"team": "support"}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s["model"].update(voice="marine"), "spec.model.voice"),
        (
            lambda s: s["model"].update(instructions="x" * (MAX_INSTRUCTIONS + 1)),
            "spec.model.instructions",
        ),
        (
            lambda s: s.update(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
            "spec.autoscaling.minReplicas",
        ),
        (
            lambda s: s.update(autoscaling={"mode": "hpa", "minReplicas": 0}),
            "spec.autoscaling.minReplicas",
        ),
        (lambda s: s.update(autoscaling={"mode": "cpu"}), "spec.autoscaling.mode"),
        (lambda s: s["livekit"].update(url="livekit:7880"), "spec.livekit.url"),
        (lambda s: s["livekit"].pop("credentialsSecret"), "spec.livekit.credentialsSecret"),
        (lambda s: s["model"].pop("apiKeySecret"), "spec.model.apiKeySecret"),
        (lambda s: s.pop("livekit"), "spec.livekit"),
        (lambda s: s.pop("model"), "spec.model"),
        (lambda s: s.update(agent={"module": "my-agent.py"}), "spec.agent.module"),
        (
            lambda s: s.update(agent={"module": "a", "jobExecutor": "fork"}),
            "spec.agent.jobExecutor",
        ),
        (lambda s: s.update(agent={"modules": "a"}), "spec.agent"),
        (
            lambda s: s.update(template={"env": [{"name": "VOICEFLEET_AGENT", "value": "a"}]}),
            "spec.template.env[0].name",
        ),
        (lambda s: s["model"].update(baseURL="not a url"), "spec.model.baseURL"),
        (lambda s: s["model"].update(temperature="hot"), "spec.model.temperature"),
        (lambda s: s.update(sessions={"maxPerWorker": 0}), "spec.sessions.maxPerWorker"),
        (
            lambda s: s["model"].update(turnDetection={"type": "server_vad", "eagerness": "low"}),
            "spec.model.turnDetection.eagerness",
        ),
        (
            lambda s: s.update(tools=[_tool("a"), _tool("a")]),
            "spec.tools[1].name",
        ),
        (lambda s: s.update(tools=[_tool("1bad")]), "spec.tools[0].name"),
        (lambda s: s.update(tools=[{**_tool("a"), "url": "ftp://x"}]), "spec.tools[0].url"),
        *(
            (
                lambda s, u=u: s.update(tools=[_tool("a"), {**_tool("b"), "url": u}]),
                "spec.tools[1].url",
            )
            for u in (
                "http://169.254.169.254/latest/meta-data/",
                "http://[fe80::1]/x",
                "http://2852039166/",
                "http://[::ffff:169.254.169.254]/",
                "http://100.100.100.200/latest",
                "http://metadata.google.internal/computeMetadata/v1/",
                "http://METADATA/",
            )
        ),
        (
            lambda s: s.update(
                tools=[
                    {**_tool("a"), "headers": [{"name": "Authorization", "value": "Bearer sk-123"}]}
                ]
            ),
            "spec.tools[0].headers[0].value",
        ),
        (
            lambda s: s.update(tools=[{**_tool("a"), "headers": [{"name": "Authorization"}]}]),
            "spec.tools[0].headers[0].valueFrom",
        ),
        (
            lambda s: s.update(
                tools=[
                    {
                        **_tool("a"),
                        "headers": [
                            {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "t"}}}
                        ],
                    }
                ]
            ),
            "spec.tools[0].headers[0].valueFrom.secretKeyRef.key",
        ),
        (
            lambda s: s.update(tools=[{**_tool("a"), "headers": [_header("Bad Name")]}]),
            "spec.tools[0].headers[0].name",
        ),
        (
            lambda s: s.update(tools=[{**_tool("a"), "headers": [_header("Host")]}]),
            "spec.tools[0].headers[0].name",
        ),
        (
            lambda s: s.update(tools=[{**_tool("a"), "headers": [_header("X-A"), _header("x-a")]}]),
            "spec.tools[0].headers[1].name",
        ),
        (
            lambda s: s.update(
                template={"env": [{"name": "VOICEFLEET_TOOL_0_HEADER_0", "value": "x"}]}
            ),
            "spec.template.env[0].name",
        ),
        (
            lambda s: s.update(template={"env": [{"name": "OPENAI_API_KEY", "value": "sk-123"}]}),
            "spec.template.env[0].name",
        ),
        (
            lambda s: s.update(template={"env": [{"name": "POD_IP", "value": "1.2.3.4"}]}),
            "spec.template.env[0].name",
        ),
        (
            lambda s: s.update(template={"labels": {"app.kubernetes.io/instance": "x"}}),
            "spec.template.labels[app.kubernetes.io/instance]",
        ),
        (lambda s: s.update(template={"labels": {"team": "a b"}}), "spec.template.labels[team]"),
        (
            lambda s: s.update(template={"resources": {"limits": {"cpu": "lots"}}}),
            "spec.template.resources.limits.cpu",
        ),
        (
            lambda s: s.update(template={"volumes": [{"name": "agent-config", "emptyDir": {}}]}),
            "spec.template.volumes[0].name",
        ),
        (
            lambda s: s.update(template={"volumes": [{"name": "a", "emptyDir": {}}] * 2}),
            "spec.template.volumes[1].name",
        ),
        (
            lambda s: s.update(template={"volumes": [{"emptyDir": {}}]}),
            "spec.template.volumes[0].name",
        ),
        (
            lambda s: s.update(template={"volumeMounts": [{"name": "ca", "mountPath": "/ca"}]}),
            "spec.template.volumeMounts[0].name",
        ),
        (
            lambda s: s.update(
                template={
                    "volumes": [{"name": "ca", "emptyDir": {}}],
                    "volumeMounts": [{"name": "ca", "mountPath": "ca"}],
                }
            ),
            "spec.template.volumeMounts[0].mountPath",
        ),
        (
            lambda s: s.update(
                template={
                    "volumes": [{"name": "ca", "emptyDir": {}}],
                    "volumeMounts": [{"name": "ca", "mountPath": "/etc/voicefleet/x"}],
                }
            ),
            "spec.template.volumeMounts[0].mountPath",
        ),
        (
            lambda s: s.update(template={"containers": [{"name": "agent", "image": "x"}]}),
            "spec.template.containers[0].name",
        ),
        (
            lambda s: s.update(
                template={
                    "initContainers": [{"name": "x", "image": "x"}],
                    "containers": [{"name": "x", "image": "y"}],
                }
            ),
            "spec.template.containers[0].name",
        ),
        (lambda s: s.update(template={"containers": ["busybox"]}), "spec.template.containers[0]"),
        (lambda s: s.update(replicas=-1), "spec.replicas"),
        (
            lambda s: s.update(disruptionBudget={"maxUnavailable": "x%"}),
            "spec.disruptionBudget.maxUnavailable",
        ),
    ],
)
def test_bad_specs_name_the_field(mutate: Any, field: str) -> None:
    spec = minimal_spec()
    mutate(spec)
    assert _err(spec).field == field


def _tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": "d", "url": "http://tools.svc/x"}


def _header(name: str, secret: str = "tools", key: str = "token") -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def test_tool_headers_come_from_secrets_through_env() -> None:
    spec = minimal_spec()
    spec["tools"] = [
        _tool("a"),
        {**_tool("b"), "headers": [_header("Authorization"), _header("X-Api-Key", key="k2")]},
    ]
    parsed = parse_spec("support", "voice", spec)
    (a, b) = parsed.config.tools
    assert a.headers == ()
    assert [(h.name, h.env) for h in b.headers] == [
        ("Authorization", "VOICEFLEET_TOOL_1_HEADER_0"),
        ("X-Api-Key", "VOICEFLEET_TOOL_1_HEADER_1"),
    ]
    assert [(h.env, h.ref.name, h.ref.key) for h in parsed.tool_headers] == [
        ("VOICEFLEET_TOOL_1_HEADER_0", "tools", "token"),
        ("VOICEFLEET_TOOL_1_HEADER_1", "tools", "k2"),
    ]
    text = parsed.config.to_json()
    assert "secretKeyRef" not in text and '"headers"' in text
    # A tool without headers renders as before headers existed (no config hash change).
    assert (
        '"headers"'
        not in parse_spec("support", "voice", {**spec, "tools": [_tool("a")]}).config.to_json()
    )


def test_a_refused_tool_url_says_why() -> None:
    spec = minimal_spec()
    spec["tools"] = [{**_tool("a"), "url": "http://169.254.169.254/latest/meta-data/"}]
    e = _err(spec)
    assert e.field == "spec.tools[0].url"
    assert "link-local" in e.message and "169.254.169.254" in e.message
    # Cluster Services, private and loopback addresses are what tools call.
    for url in ("http://orders.shop.svc/x", "http://10.0.0.7:8080/x", "http://127.0.0.1:9/x"):
        spec["tools"] = [{**_tool("a"), "url": url}]
        parse_spec("support", "voice", spec)


def test_any_voice_with_a_compatible_endpoint() -> None:
    spec = minimal_spec()
    spec["model"].update(voice="my-voice", baseURL="http://127.0.0.1:8765/v1")
    assert parse_spec("support", "voice", spec).config.model.voice == "my-voice"


@pytest.mark.parametrize("name", ["Support", "a" * 56, "1abc", "a.b"])
def test_names_that_cannot_name_children(name: str) -> None:
    assert _err(minimal_spec(), name).field == "metadata.name"


def test_a_daemon_parses_the_spec_once_per_generation() -> None:
    from voicefleet_operator.spec import ParsedSpec

    spec = minimal_spec()
    parsed = ParsedSpec("voice", "support")
    first = parsed.of({"metadata": {"generation": 1}}, spec)
    assert first is not None and parsed.of({"metadata": {"generation": 1}}, spec) is first
    broken = {**spec, "sessions": {"maxPerWorker": 0}}
    assert parsed.of({"metadata": {"generation": 2}}, broken) is None  # reported elsewhere
    again = parsed.of({"metadata": {"generation": 3}}, spec)
    assert again is not None and again is not first
