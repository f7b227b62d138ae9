"""The testbed against its real parts: a real API server and controller-manager, pods run by
the node agent as processes, RBAC enforced."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from kubernetes import client

from voicefleet_testbed.kube import Kube
from voicefleet_testbed.procs import start_time, wait_for
from voicefleet_testbed.stack import Stack

pytestmark = pytest.mark.cluster
JSON = dict[str, Any]

# A process that reports SIGTERM in its log, takes a moment to shut down, then exits 0.
GRACEFUL = """
import signal, sys, time, http.server, os, threading
def term(*_):
    print("got SIGTERM", flush=True)
    time.sleep(0.5)
    print("exiting cleanly", flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
srv = http.server.HTTPServer((os.environ["POD_IP"], 8000), http.server.SimpleHTTPRequestHandler)
srv.serve_forever()
"""


def pod_ip_env() -> JSON:
    return {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def deployment(name: str, replicas: int, container: JSON, grace: int = 10) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]},
            },
        },
    }


def http_server(readiness: bool = True) -> JSON:
    c: JSON = {
        "name": "web",
        "image": "python:3.11",
        "command": ["python3", "-m", "http.server", "--bind", "$(POD_IP)", "8000"],
        "env": [pod_ip_env()],
    }
    if readiness:
        c["readinessProbe"] = {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1}
    return c


def pods(kube: Kube, ns: str, selector: str) -> list[client.V1Pod]:
    return list(kube.core.list_namespaced_pod(ns, label_selector=selector).items)


def container_log(stack: Stack, ns: str, pod: str, container: str) -> str:
    path = stack.pods_dir / ns / pod / f"{container}.log"
    return path.read_text() if path.exists() else ""


def main_pid(stack: Stack, ns: str, pod: str, container: str) -> tuple[int, int]:
    pid, started = (stack.pods_dir / ns / pod / f"{container}.pid").read_text().split()
    return int(pid), int(started)


def test_node_is_ready_and_server_is_real(kube: Kube) -> None:
    assert kube.node_ready("testbed-node")
    version = client.VersionApi(kube.api).get_code()
    from voicefleet_testbed.binaries import versions

    assert version.git_version == f"v{versions()['KUBERNETES_VERSION']}"


def test_deployment_becomes_available_with_ready_pods(kube: Kube, namespace: str) -> None:
    kube.create(deployment("web", 2, http_server()), namespace)

    def available() -> bool:
        d = kube.apps.read_namespaced_deployment("web", namespace)
        return bool(d.status and d.status.available_replicas == 2 and d.status.ready_replicas == 2)

    wait_for(available, 60, "deployment web to have 2 available replicas")
    ips = [p.status.pod_ip for p in pods(kube, namespace, "app=web") if p.status]
    assert len(set(ips)) == 2, f"each pod gets its own address: {ips}"
    for ip in ips:
        assert ip and ip.startswith("127.") and ip != "127.0.0.1"
        with urllib.request.urlopen(f"http://{ip}:8000/", timeout=5) as resp:
            assert resp.status == 200


def test_failing_readiness_probe_keeps_pod_unready(
    stack: Stack, kube: Kube, namespace: str
) -> None:
    # The probe records each run in the pod's home directory, then fails.
    c = http_server(readiness=False)
    c["readinessProbe"] = {
        "exec": {"command": ["sh", "-c", 'echo x >> "$HOME/probes"; exit 1']},
        "periodSeconds": 1,
    }
    kube.create(deployment("notready", 1, c), namespace)
    pod = wait_for(lambda: pods(kube, namespace, "app=notready"), 30, "a pod")[0]
    name = str(pod.metadata.name if pod.metadata else "")
    probes = stack.pods_dir / namespace / name / "home" / "probes"
    wait_for(lambda: probes.exists() and len(probes.read_text().split()) >= 4, 30, "4 probe runs")
    p = kube.core.read_namespaced_pod(name, namespace)
    assert p.status and p.status.phase == "Running"
    ready = [c for c in (p.status.conditions or []) if c.type == "Ready"]
    assert ready and ready[0].status == "False"
    d = kube.apps.read_namespaced_deployment("notready", namespace)
    assert d.status and not d.status.available_replicas


def test_scale_down_sends_sigterm_before_sigkill(stack: Stack, kube: Kube, namespace: str) -> None:
    c = {
        "name": "app",
        "image": "python:3.11",
        "command": ["python3", "-c", GRACEFUL],
        "env": [pod_ip_env()],
        "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
    }
    kube.create(deployment("graceful", 2, c, grace=20), namespace)
    wait_for(
        lambda: (
            (d := kube.apps.read_namespaced_deployment("graceful", namespace)).status
            and d.status.ready_replicas == 2
        ),
        60,
        "2 ready replicas",
    )
    before = {str(p.metadata.name) for p in pods(kube, namespace, "app=graceful") if p.metadata}
    kube.apps.patch_namespaced_deployment_scale("graceful", namespace, {"spec": {"replicas": 1}})
    wait_for(lambda: len(pods(kube, namespace, "app=graceful")) == 1, 60, "scale-down to 1 pod")
    after = {str(p.metadata.name) for p in pods(kube, namespace, "app=graceful") if p.metadata}
    (removed,) = before - after
    log = container_log(stack, namespace, removed, "app")
    assert "got SIGTERM" in log, log
    assert "exiting cleanly" in log, "the process was killed before it finished its shutdown"


def test_force_delete_kills_at_once(stack: Stack, kube: Kube, namespace: str) -> None:
    # Ignores SIGTERM: only a SIGKILL ends it.
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stubborn"},
        "spec": {
            "terminationGracePeriodSeconds": 600,
            "containers": [
                {"name": "c", "image": "python:3.11", "command": ["python3", "-c", stubborn]}
            ],
        },
    }
    kube.create(pod, namespace)
    wait_for(
        lambda: (
            (p := kube.core.read_namespaced_pod("stubborn", namespace)).status
            and p.status.phase == "Running"
        ),
        60,
        "pod running",
    )
    pid, started = wait_for(lambda: main_pid(stack, namespace, "stubborn", "c"), 10, "pid file")
    kube.delete("v1", "Pod", "stubborn", namespace, grace_seconds=0)
    # Well under the 600 s grace period: the process must be gone.
    wait_for(lambda: start_time(pid) != started, 10, "the stubborn process to be killed")


def test_deleting_owner_garbage_collects(kube: Kube, namespace: str) -> None:
    kube.create(deployment("gc", 1, http_server()), namespace)
    wait_for(lambda: len(pods(kube, namespace, "app=gc")) == 1, 60, "a pod")
    kube.delete("apps/v1", "Deployment", "gc", namespace)
    wait_for(
        lambda: (
            not kube.apps.list_namespaced_replica_set(namespace).items
            and not pods(kube, namespace, "app=gc")
        ),
        60,
        "ReplicaSet and pods garbage-collected",
    )


def test_crashing_container_shows_restarts(kube: Kube, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crasher"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "python:3.11",
                    "command": ["python3", "-c", "import sys; sys.exit(3)"],
                }
            ]
        },
    }
    kube.create(pod, namespace)

    def restarted() -> client.V1ContainerStatus | None:
        p = kube.core.read_namespaced_pod("crasher", namespace)
        for cs in (p.status.container_statuses if p.status else None) or []:
            if cs.restart_count >= 2:
                return cs
        return None

    cs = wait_for(restarted, 60, "two restarts")
    assert cs.last_state and cs.last_state.terminated
    assert cs.last_state.terminated.exit_code == 3


def test_secret_env_and_configmap_volume_reach_the_process(kube: Kube, namespace: str) -> None:
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cr3t"},
        },
        namespace,
    )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"agent.json": '{"a": 1}'},
        },
        namespace,
    )
    check = (
        "import os, json, sys\n"
        "ok = os.environ['TOKEN'] == 's3cr3t' and json.load(open(os.environ['CONFIG']))['a'] == 1\n"
        "sys.exit(0 if ok else 1)"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reader"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}],
            "containers": [
                {
                    "name": "c",
                    "image": "python:3.11",
                    "command": ["python3", "-c", check],
                    "env": [
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                        },
                        {"name": "CONFIG", "value": "/etc/app/agent.json"},
                    ],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}],
                }
            ],
        },
    }
    kube.create(pod, namespace)
    phase = wait_for(
        lambda: (
            (p := kube.core.read_namespaced_pod("reader", namespace)).status
            and p.status.phase in ("Succeeded", "Failed")
            and p.status.phase
        ),
        60,
        "the pod to finish",
    )
    assert phase == "Succeeded"


def test_missing_secret_keeps_container_waiting(kube: Kube, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nosecret"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "python:3.11",
                    "command": ["python3", "-c", "pass"],
                    "env": [
                        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
                    ],
                }
            ]
        },
    }
    kube.create(pod, namespace)

    def waiting_reason() -> str | None:
        p = kube.core.read_namespaced_pod("nosecret", namespace)
        for cs in (p.status.container_statuses if p.status else None) or []:
            if cs.state and cs.state.waiting:
                return cs.state.waiting.reason
        return None

    def settled_reason() -> str | None:
        reason = waiting_reason()
        return None if reason in (None, "ContainerCreating") else reason  # passes on the way

    assert wait_for(settled_reason, 30, "a waiting reason") == "CreateContainerConfigError"


def test_rbac_forbids_what_a_restricted_identity_may_not_do(
    stack: Stack, kube: Kube, namespace: str
) -> None:
    kube.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        namespace,
    )
    kube.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "pod-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
        namespace,
    )
    restricted = Kube.with_token(stack, kube.mint_token(namespace, "reader"))
    restricted.core.list_namespaced_pod(namespace)  # allowed
    with pytest.raises(client.ApiException) as secrets_err:
        restricted.core.list_namespaced_secret(namespace)
    assert secrets_err.value.status == 403
    with pytest.raises(client.ApiException) as other_ns:
        restricted.core.list_namespaced_pod("default")
    assert other_ns.value.status == 403


def test_service_account_token_reaches_pod(kube: Kube, namespace: str) -> None:
    """A pod's projected service-account token works against the API (the operator's path)."""
    kube.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "view"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
        namespace,
    )
    wait_for(
        lambda: kube.service_account_exists(namespace, "default"), 30, "default ServiceAccount"
    )
    check = (
        "from kubernetes import client, config\n"
        "config.load_kube_config()\n"
        "import os\n"
        "client.CoreV1Api().list_namespaced_pod(os.environ['NS'])\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sa"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "c",
                    "image": "python:3.11",
                    "command": ["python3", "-c", check],
                    "env": [
                        {
                            "name": "NS",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        }
                    ],
                }
            ],
        },
    }
    kube.create(pod, namespace)
    phase = wait_for(
        lambda: (
            (p := kube.core.read_namespaced_pod("sa", namespace)).status
            and p.status.phase in ("Succeeded", "Failed")
            and p.status.phase
        ),
        60,
        "the pod to finish",
    )
    assert phase == "Succeeded"


def test_livekit_answers_with_the_stack_keys(stack: Stack) -> None:
    import asyncio

    from livekit import api

    async def rooms() -> int:
        http_url = stack.livekit_url.replace("ws://", "http://")
        lk = api.LiveKitAPI(http_url, "devkey", stack.livekit_secret)
        try:
            await lk.room.create_room(api.CreateRoomRequest(name="probe"))
            listed = await lk.room.list_rooms(api.ListRoomsRequest())
            return len([r for r in listed.rooms if r.name == "probe"])
        finally:
            await lk.aclose()

    assert asyncio.run(rooms()) == 1
