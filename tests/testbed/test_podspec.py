"""The node agent's pure rules: env resolution, $(VAR) expansion, image table, paths, status."""

from __future__ import annotations

from typing import Any

import pytest

from voicefleet_testbed.nodeagent.podspec import (
    ConfigError,
    ImageRule,
    PodFacts,
    expand,
    match_image,
    mount_map,
    parse_probe,
    plan_process,
    resolve_env,
    restart_backoff,
    should_restart,
    translate_path,
)
from voicefleet_testbed.nodeagent.status import ContainerView, pod_phase, pod_status

FACTS = PodFacts("p", "ns", "uid-1", "127.1.0.7", "node", "sa", {"app": "x"}, {"a": "b"})


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_env_resolution_in_order_with_refs() -> None:
    container: dict[str, Any] = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://$(IP):80"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "none", "key": "k", "optional": True}},
            },
        ],
    }
    env = resolve_env(container, FACTS, {"s": {"k": "v"}}, {"cm": {"x": "1"}}, {"BASE": "b"})
    assert env == {
        "BASE": "b",
        "CM_x": "1",
        "IP": "127.1.0.7",
        "URL": "http://127.1.0.7:80",
        "TOKEN": "v",
        "APP": "x",
    }


@pytest.mark.parametrize(
    ("secrets", "message"),
    [({}, 'secret "s" not found'), ({"s": {}}, "couldn't find key k in secret s")],
)
def test_missing_secret_or_key_is_a_config_error(
    secrets: dict[str, dict[str, str]], message: str
) -> None:
    container = {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(ConfigError) as err:
        resolve_env(container, FACTS, secrets, {})
    assert err.value.reason == "CreateContainerConfigError"
    assert message in err.value.message


def test_image_table_first_match_and_unknown_image() -> None:
    table = [ImageRule("ghcr.io/voicefleet/worker*", ("py", "-m", "w")), ImageRule("python*")]
    assert match_image("ghcr.io/voicefleet/worker:0.1.0", table).entrypoint == ("py", "-m", "w")
    with pytest.raises(ConfigError) as err:
        match_image("nginx", table)
    assert err.value.reason == "ErrImagePull"


def test_paths_under_mounts_are_translated_most_specific_first() -> None:
    container = {
        "volumeMounts": [
            {"name": "a", "mountPath": "/etc/app"},
            {"name": "b", "mountPath": "/etc/app/sub"},
        ]
    }
    mounts = mount_map(container, {"a": "/pods/a", "b": "/pods/b"})
    assert translate_path("/etc/app/x.json", mounts) == "/pods/a/x.json"
    assert translate_path("/etc/app/sub/y", mounts) == "/pods/b/y"
    assert translate_path("/etc/application", mounts) == "/etc/application"


def test_command_replaces_entrypoint_and_args_follow() -> None:
    rule = ImageRule("img", ("python", "-m", "svc"))
    env = {"PORT": "9"}
    plan = plan_process({"args": ["--port", "$(PORT)"]}, rule, env, [], "/cwd")
    assert plan.argv == ("python", "-m", "svc", "--port", "9")
    plan = plan_process({"command": ["sh"], "args": ["-c", "x"]}, rule, env, [], "/cwd")
    assert plan.argv == ("sh", "-c", "x")
    with pytest.raises(ConfigError):
        plan_process({"name": "c"}, ImageRule("*"), env, [], "/cwd")


def test_the_image_entrypoint_is_a_host_path_never_translated() -> None:
    """A checkout in /tmp (CI's clone may be) and a pod mounting an emptyDir at /tmp: the
    image table's interpreter is the host's, while the pod's own args are translated."""
    rule = ImageRule("img", ("/tmp/x/.venv/bin/python", "-m", "svc"))
    mounts = [("/tmp", "/pods/p/volumes/tmp")]
    plan = plan_process({"args": ["--state", "/tmp/s"]}, rule, {}, mounts, "/cwd")
    assert plan.argv == (
        "/tmp/x/.venv/bin/python", "-m", "svc", "--state", "/pods/p/volumes/tmp/s"
    )  # fmt: skip
    plan = plan_process({"command": ["/tmp/tool"]}, rule, {}, mounts, "/cwd")
    assert plan.argv == ("/pods/p/volumes/tmp/tool",)  # the pod's own path: translated


def test_host_paths_in_env_are_not_translated_even_under_a_mount() -> None:
    """A stack in /tmp and a pod mounting an emptyDir at /tmp: the node agent's own
    KUBECONFIG/HOME must stay host paths, the container's own /tmp paths move."""
    mounts = [("/tmp", "/tmp/stack/pods/ns/p/volumes/tmp")]
    env = {"KUBECONFIG": "/tmp/stack/pods/ns/p/kubeconfig", "CACHE": "/tmp/cache"}
    plan = plan_process(
        {"args": ["x"]}, ImageRule("img", ("run",)), env, mounts, "/cwd", frozenset({"KUBECONFIG"})
    )
    assert plan.env["KUBECONFIG"] == "/tmp/stack/pods/ns/p/kubeconfig"
    assert plan.env["CACHE"] == "/tmp/stack/pods/ns/p/volumes/tmp/cache"


def test_probe_named_port_and_defaults() -> None:
    container = {"ports": [{"name": "health", "containerPort": 8081}]}
    probe = parse_probe({"httpGet": {"port": "health"}}, container, "127.1.0.2")
    assert probe is not None
    assert (probe.port, probe.host, probe.period, probe.failure_threshold) == (
        8081,
        "127.1.0.2",
        10.0,
        3,
    )
    with pytest.raises(ConfigError):
        parse_probe({"httpGet": {"port": "nope"}}, container, "127.1.0.2")


def test_restart_rules() -> None:
    assert [restart_backoff(n, 1, 8) for n in range(6)] == [0, 1, 2, 4, 8, 8]
    assert should_restart("Always", 0) and should_restart("OnFailure", 1)
    assert not should_restart("OnFailure", 0) and not should_restart("Never", 1)


def test_pod_phase_and_ready_condition() -> None:
    running = ContainerView("c", "img", state="running", ready=True, started=True)
    assert pod_phase("Always", [], [ContainerView("c", "img")]) == "Pending"
    assert pod_phase("Always", [], [running]) == "Running"
    done = ContainerView("c", "img", state="terminated", exit_code=0)
    failed = ContainerView("c", "img", state="terminated", exit_code=2)
    assert pod_phase("Never", [], [done]) == "Succeeded"
    assert pod_phase("Never", [], [failed]) == "Failed"
    assert pod_phase("OnFailure", [], [failed]) == "Running"

    since: dict[str, tuple[bool, str]] = {}
    status = pod_status(
        restart_policy="Always", init=[], main=[running], pod_ip="127.1.0.3",
        start_time="t0", now="t1", since=since,
    )  # fmt: skip
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["lastTransitionTime"] == "t1"
    again = pod_status(
        restart_policy="Always", init=[], main=[running], pod_ip="127.1.0.3",
        start_time="t0", now="t2", since=since,
    )  # fmt: skip
    ready = next(c for c in again["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "t1", "transition time moves only when status flips"
