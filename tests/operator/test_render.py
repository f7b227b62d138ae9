"""render.py: the desired objects for a spec."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from voicefleet_contract import (
    ANNOTATION_CONFIG_HASH,
    API_VERSION,
    CONFIG_FILE_KEY,
    HEALTH_PORT,
    KIND,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    READY_PATH,
    SECRET_ENV,
    Env,
)
from voicefleet_operator.fleet import selector_labels
from voicefleet_operator.render import (
    Owner,
    desired_replicas,
    render_children,
)
from voicefleet_operator.settings import Settings
from voicefleet_operator.spec import DRAIN_MARGIN_SECONDS, SpecError, parse_spec

from ..pod_security import restricted_violations
from .util import body, full_spec, minimal_spec

OWNER = Owner("support", "voice", "uid-1")
SETTINGS = Settings(default_image="ghcr.io/voicefleet/worker:test")


def _children(spec: dict[str, Any], settings: Settings = SETTINGS) -> Any:
    return render_children(parse_spec("support", "voice", spec), OWNER, settings)


def _container(children: Any) -> dict[str, Any]:
    return children.deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_every_child_is_owned_and_labelled() -> None:
    c = _children(full_spec())
    for obj in c.in_apply_order():
        meta = obj["metadata"]
        assert meta["namespace"] == "voice"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": "support",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"][LABEL_INSTANCE] == "support"
        assert meta["labels"][LABEL_MANAGED_BY] == "voicefleet-operator"
    kinds = [o["kind"] for o in c.in_apply_order()]
    assert kinds == ["ConfigMap", "Service", "PodDisruptionBudget", "Deployment"]


def test_secrets_are_secret_key_refs_never_literal() -> None:
    env = {e["name"]: e for e in _container(_children(full_spec()))["env"]}
    assert env[Env.LIVEKIT_API_KEY]["valueFrom"]["secretKeyRef"] == {
        "name": "livekit",
        "key": "key",
    }
    assert env[Env.LIVEKIT_API_SECRET]["valueFrom"]["secretKeyRef"] == {
        "name": "livekit",
        "key": "apiSecret",
    }
    assert env[Env.OPENAI_API_KEY]["valueFrom"]["secretKeyRef"] == {
        "name": "openai",
        "key": "token",
    }
    for name in SECRET_ENV:
        assert "value" not in env[name]
    assert env[Env.POD_IP]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env[Env.LIVEKIT_URL]["value"] == "ws://127.0.0.1:7880"
    assert env["EXTRA"] == {"name": "EXTRA", "value": "1"}


def test_the_stock_agents_env_keeps_its_order() -> None:
    """An operator upgrade must not roll running fleets: the env a spec without
    spec.agent renders is the one it always rendered, in the same order."""
    names = [e["name"] for e in _container(_children(minimal_spec()))["env"]]
    assert names == [
        Env.CONFIG_FILE, Env.POD_NAME, Env.POD_NAMESPACE, Env.POD_IP, Env.METRICS_PORT,
        Env.HEALTH_PORT, Env.LOG_FORMAT, Env.LIVEKIT_URL, Env.LIVEKIT_API_KEY,
        Env.LIVEKIT_API_SECRET, Env.OPENAI_API_KEY, Env.RESUME_KEY, Env.SESSIONS_TOKEN,
    ]  # fmt: skip


def test_an_agent_of_ones_own_is_env_and_needs_no_openai_key() -> None:
    spec = {**minimal_spec(), "agent": {"module": "my_agent:server", "jobExecutor": "process"}}
    del spec["model"]
    env = {e["name"]: e for e in _container(_children(spec))["env"]}
    assert env[Env.AGENT] == {"name": Env.AGENT, "value": "my_agent:server"}
    assert env[Env.JOB_EXECUTOR] == {"name": Env.JOB_EXECUTOR, "value": "process"}
    assert Env.OPENAI_API_KEY not in env


def test_rollout_never_removes_a_worker_first_and_grace_covers_drain() -> None:
    spec = full_spec()
    d = _children(spec).deployment["spec"]
    assert d["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": "25%"}
    grace = d["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == spec["sessions"]["drainTimeoutSeconds"] + DRAIN_MARGIN_SECONDS
    assert "replicas" not in d  # owned per autoscaling mode, not by the main apply


def test_probes_liveness_on_health_readiness_on_registration() -> None:
    c = _container(_children(minimal_spec()))
    for probe in ("livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/", "port": "health"}
    # Ready only once registered with LiveKit: a rollout must not retire old workers for a
    # new one LiveKit cannot dispatch to yet.
    assert c["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": "metrics"}
    assert {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"} in c["ports"]
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 60
    # A hung worker is not ready within 2 s (the kubelet probes on a ticker: the first
    # probe after the hang starts within a period and fails at its timeout): failover's
    # first witness of a hang.
    r = c["readinessProbe"]
    assert (
        r["periodSeconds"] + (r["failureThreshold"] - 1) * r["periodSeconds"] + r["timeoutSeconds"]
        <= 2
    )


def test_configmap_holds_the_contract_json_and_its_hash_rolls_pods() -> None:
    spec = parse_spec("support", "voice", full_spec())
    c = render_children(spec, OWNER, SETTINGS)
    assert c.configmap["data"][CONFIG_FILE_KEY] == spec.config.to_json()
    annotations = c.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ANNOTATION_CONFIG_HASH] == c.config_hash


def _hash(spec: dict[str, Any]) -> str:
    return str(_children(spec).config_hash)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["model"].update(instructions="Something else."),
        lambda s: s["model"].update(voice="my-voice"),
        lambda s: s.update(tools=[]),
        lambda s: s["sessions"].update(maxPerWorker=5),
        lambda s: s["livekit"].update(url="wss://lk.example.com"),
        lambda s: s.update(agentName="other"),
    ],
)
def test_hash_changes_with_the_agent_config(mutate: Any) -> None:
    spec = full_spec()
    changed = copy.deepcopy(spec)
    mutate(changed)
    assert _hash(spec) != _hash(changed)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["autoscaling"].update(maxReplicas=40),
        lambda s: s.update(replicas=7),
        lambda s: s["template"].update(image="registry.example/agent:1.3"),
        lambda s: s["template"]["labels"].update(extra="1"),
        lambda s: s["livekit"].update(credentialsSecret="other"),  # a secret, not config
    ],
)
def test_hash_ignores_what_is_not_agent_config(mutate: Any) -> None:
    spec = full_spec()
    changed = copy.deepcopy(spec)
    mutate(changed)
    assert _hash(spec) == _hash(changed)


def test_hash_is_stable() -> None:
    assert _hash(full_spec()) == _hash(full_spec())


def test_image_defaults_to_the_operators() -> None:
    assert _container(_children(minimal_spec()))["image"] == "ghcr.io/voicefleet/worker:test"
    with pytest.raises(SpecError) as e:
        _children(minimal_spec(), Settings(default_image=""))
    assert e.value.field == "spec.template.image"


def test_user_labels_cannot_break_the_selector() -> None:
    d = _children(full_spec()).deployment["spec"]
    selector = d["selector"]["matchLabels"]
    pod_labels = d["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert pod_labels["team"] == "support"


@pytest.mark.parametrize(
    ("autoscaling", "replicas", "current", "expected"),
    [
        ({"mode": "none"}, 3, 1, 3),
        ({"mode": "none"}, None, 1, 1),
        ({"mode": "none", "minReplicas": 0}, 0, 2, 0),
        ({"mode": "builtin", "minReplicas": 2, "maxReplicas": 4}, None, 1, 2),
        ({"mode": "builtin", "minReplicas": 2, "maxReplicas": 4}, 9, None, 4),  # seeds, clamped
        ({"mode": "builtin", "minReplicas": 2, "maxReplicas": 4}, 9, 1, 2),  # bounds win
        ({"mode": "builtin", "minReplicas": 2, "maxReplicas": 4}, None, 3, None),  # autoscaler owns
        ({"mode": "hpa", "minReplicas": 2}, 9, None, 2),  # seeds a new Deployment
        ({"mode": "hpa", "minReplicas": 2}, 9, 5, None),  # then lets go
        ({"mode": "keda", "minReplicas": 0}, None, 5, None),
    ],
)
def test_replicas_ownership_per_mode(
    autoscaling: dict[str, Any], replicas: int | None, current: int | None, expected: int | None
) -> None:
    spec = minimal_spec()
    spec["autoscaling"] = autoscaling
    if replicas is not None:
        spec["replicas"] = replicas
    assert desired_replicas(parse_spec("support", "voice", spec), current) == expected


def test_owner_from_body() -> None:
    assert Owner.from_body(body(minimal_spec())).uid.startswith("1f0e")


def _pod(template: dict[str, Any]) -> dict[str, Any]:
    spec = minimal_spec()
    spec["template"] = template
    pod: dict[str, Any] = _children(spec).deployment["spec"]["template"]["spec"]
    return pod


def test_workers_pass_pod_security_restricted_by_default() -> None:
    pod = _pod({})
    assert restricted_violations(pod) == []
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,  # worker/Dockerfile's USER
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


@pytest.mark.parametrize(
    ("template", "pod_sc", "container_sc", "restricted"),
    [
        # A key the template sets is added; the defaults stay.
        (
            {"securityContext": {"fsGroup": 2000}, "containerSecurityContext": {"readOnlyRootFilesystem": True}},
            {"fsGroup": 2000, "runAsUser": 10001, "runAsNonRoot": True},
            {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
            True,
        ),
        # A key the template sets replaces ours whole.
        ({"securityContext": {"runAsUser": 4242}}, {"runAsUser": 4242, "runAsGroup": 10001}, {}, True),
        (
            {"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "w.json"}}},
            {"seccompProfile": {"type": "Localhost", "localhostProfile": "w.json"}},
            {},
            True,
        ),
        # Saying otherwise is the VoiceAgent's call: it no longer passes restricted.
        ({"securityContext": {"runAsNonRoot": False, "runAsUser": 0}}, {"runAsNonRoot": False, "runAsUser": 0}, {}, False),
        (
            {"containerSecurityContext": {"capabilities": {"add": ["NET_ADMIN"]}}},
            {},
            {"capabilities": {"add": ["NET_ADMIN"]}, "allowPrivilegeEscalation": False},
            False,
        ),
        ({"containerSecurityContext": {"allowPrivilegeEscalation": True}}, {}, {"allowPrivilegeEscalation": True}, False),
    ],
)  # fmt: skip
def test_template_security_context_merges_key_by_key(
    template: dict[str, Any],
    pod_sc: dict[str, Any],
    container_sc: dict[str, Any],
    restricted: bool,
) -> None:
    pod = _pod(template)
    assert pod["securityContext"].items() >= pod_sc.items()
    assert pod["containers"][0]["securityContext"].items() >= container_sc.items()
    assert (restricted_violations(pod) == []) is restricted, restricted_violations(pod)


def test_defaults_are_not_shared_between_renders() -> None:
    first = _pod({})
    first["securityContext"]["seccompProfile"]["type"] = "Unconfined"
    first["containers"][0]["securityContext"]["capabilities"]["drop"].append("X")
    assert restricted_violations(_pod({})) == []
    assert _pod({})["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_volumes_mounts_init_containers_and_sidecars_from_the_template() -> None:
    """A CA bundle mounted for a LiveKit behind TLS, an init container and a sidecar: in the
    pod beside the operator's own, the extra containers under the worker container's
    default security context (Pod Security restricted holds)."""
    spec = minimal_spec()
    spec["template"] = {
        "volumes": [{"name": "livekit-ca", "configMap": {"name": "livekit-ca"}}],
        "volumeMounts": [{"name": "livekit-ca", "mountPath": "/etc/livekit-ca", "readOnly": True}],
        "env": [{"name": "SSL_CERT_FILE", "value": "/etc/livekit-ca/ca.crt"}],
        "initContainers": [{"name": "wait", "image": "busybox:1.37", "command": ["true"]}],
        "containers": [
            {"name": "shipper", "image": "fluent/fluent-bit:4.0",
             "securityContext": {"readOnlyRootFilesystem": True}}
        ],
    }  # fmt: skip
    pod = _children(spec).deployment["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["agent-config", "livekit-ca"]
    worker, shipper = pod["containers"]
    assert worker["name"] == "agent"
    assert worker["volumeMounts"][1] == {
        "name": "livekit-ca", "mountPath": "/etc/livekit-ca", "readOnly": True
    }  # fmt: skip
    assert shipper["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    (init,) = pod["initContainers"]
    assert init["command"] == ["true"] and init["securityContext"]["capabilities"]
    assert restricted_violations(pod) == []


def test_network_policy_only_with_worker_ingress() -> None:
    spec = parse_spec("support", "voice", minimal_spec())
    assert render_children(spec, OWNER, Settings()).network_policy is None
    rules = ({"ports": [{"port": "metrics", "protocol": "TCP"}]},)
    children = render_children(spec, OWNER, Settings(worker_ingress=rules))
    pol = children.network_policy
    assert pol is not None
    assert pol["metadata"]["namespace"] == "voice"
    assert pol["spec"]["podSelector"]["matchLabels"] == selector_labels("support")
    assert pol["spec"]["policyTypes"] == ["Ingress"] and pol["spec"]["ingress"] == list(rules)
    assert children.in_apply_order()[-1] == pol
