"""The real node: kubelet v1.36 + containerd 2.x + runc + a CNI bridge, beside the node
agent's hollow node. Pods scheduled by kube-scheduler run as containers, are reachable on
their pod IPs from the host, resolve Services through CoreDNS, reach ClusterIPs through
kube-proxy, and `kubectl logs/exec/port-forward` go through the apiserver to the kubelet
with real authentication and authorization. The last test tears the node down and checks
nothing is left."""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voicefleet_testbed.binaries import TESTBED_DIR, Binaries
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.procs import wait_for
from voicefleet_testbed.realnode import RealNode
from voicefleet_testbed.realnode.teardown import IPTABLES
from voicefleet_testbed.stack import Stack

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
JSON = dict[str, Any]
IMAGE = "voicefleet.dev/testbed/busybox:1"
PAGE = "hello from a container\n"


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image from Debian's static busybox (sh, httpd, nslookup, wget), packed as an
    OCI archive the way the pause image is: no registry, no image tool."""
    out = tmp_path_factory.mktemp("image") / "busybox.oci.tar"
    subprocess.run(
        [
            sys.executable,
            str(TESTBED_DIR / "build" / "oci_pack.py"),
            str(out),
            IMAGE,
            "/bin/busybox",
            "65534:65534",
            "/bin/busybox:/bin/busybox:0755",
        ],
        check=True,
    )
    return out


@pytest.fixture
def busybox(real_node: RealNode, busybox_archive: Path) -> str:
    if not real_node.has_image(IMAGE):
        assert IMAGE in real_node.import_image(busybox_archive)
    return IMAGE


def web_pod(name: str, image: str) -> JSON:
    """httpd serving PAGE on 8080, after printing a line to its log."""
    script = f"echo started {name}; printf '{PAGE}' > /www/index.html; exec /bin/busybox httpd -f -p 8080 -h /www"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "www", "emptyDir": {}}],
            "containers": [
                {
                    "name": "web",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/busybox", "sh", "-c", script],
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65534,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }


def run_pod(kube: Kube, ns: str, name: str, image: str) -> JSON:
    kube.create(web_pod(name, image), ns)

    def ready() -> JSON | None:
        pod = kube.get("v1", "Pod", name, ns)
        conds = (pod or {}).get("status", {}).get("conditions") or []
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
        return pod if ok else None

    return wait_for(ready, 60, f"pod {ns}/{name} Ready")


def get(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


def kubectl(stack: Stack, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = [str(Binaries.locate().kubectl), f"--kubeconfig={stack.kubeconfig}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def test_real_node_is_ready_beside_the_hollow_node(kube: Kube, real_node: RealNode) -> None:
    nodes = {n["metadata"]["name"]: n for n in kube.list("v1", "Node")}
    real = nodes[real_node.name]
    info = real["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://2."), info
    assert info["kubeletVersion"].startswith("v1.36."), info
    assert kube.node_ready(real_node.name)
    assert real["metadata"]["labels"]["voicefleet.dev/node"] == "real"
    addresses = {a["type"]: a["address"] for a in real["status"]["addresses"]}
    assert addresses["InternalIP"] == real_node.net.gateway
    hollow = nodes["testbed-node"]
    assert hollow["metadata"]["labels"]["voicefleet.dev/node"] == "hollow"
    assert [t["key"] for t in hollow["spec"].get("taints") or []] == ["voicefleet.dev/hollow-node"]


def test_pod_is_scheduled_to_the_real_node_and_reachable_from_the_host(
    kube: Kube, real_node: RealNode, real_namespace: str, busybox: str
) -> None:
    pod = run_pod(kube, real_namespace, "web", busybox)
    assert pod["spec"]["nodeName"] == real_node.name
    assert pod["spec"].get("schedulerName") == "default-scheduler"
    status = pod["status"]
    assert status["containerStatuses"][0]["imageID"]  # a container from the imported image
    pod_ip = status["podIP"]
    assert ipaddress.ip_address(pod_ip) in real_node.net.subnet
    assert get(f"http://{pod_ip}:8080/") == PAGE
    # Starting pods left the host's forwarding alone (no route out of the machine).
    assert (
        Path("/proc/sys/net/ipv4/ip_forward").read_text() == real_node.ip_forward_record.read_text()
    )


@contextlib.contextmanager
def server_on(address: str) -> Iterator[int]:
    """An HTTP server on the host, on `address` (the bridge's): a stand-in for LiveKit."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"host server\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer((address, 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


def test_services_resolve_through_coredns_and_route_through_kube_proxy(
    stack: Stack, kube: Kube, real_node: RealNode, real_namespace: str, busybox: str
) -> None:
    ns = real_namespace
    pod = run_pod(kube, ns, "web", busybox)
    svc = kube.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        ns,
    )
    cluster_ip = svc["spec"]["clusterIP"]
    # host -> ClusterIP -> pod: kube-proxy's rules (nat OUTPUT)
    wait_for(lambda: get(f"http://{cluster_ip}/") == PAGE, 30, "the Service's ClusterIP to answer")

    # Inside a pod: the Service's DNS name from CoreDNS (through the kube-dns ClusterIP).
    fqdn = f"web.{ns}.svc.cluster.local"
    name = pod["metadata"]["name"]

    got = wait_for(lambda: lookup(stack, ns, name, fqdn), 30, f"{fqdn} inside the pod")
    assert got == cluster_ip
    # A short name through the pod's search path (resolv.conf from the kubelet).
    assert lookup(stack, ns, name, "web") == cluster_ip
    # Names outside the cluster are refused, never forwarded anywhere.
    r = kubectl(stack, "-n", ns, "exec", name, "--", "/bin/busybox", "nslookup", "example.com")
    assert r.returncode != 0 and "REFUSED" in r.stdout, r.stdout

    # pod -> Service name -> ClusterIP -> a server on the host's bridge address, the way
    # workers will reach LiveKit (a selector-less Service with an EndpointSlice).
    with server_on(real_node.net.gateway) as port:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "hostsrv"},
                "spec": {"ports": [{"port": 8000, "targetPort": port}]},
            },
            ns,
        )
        kube.create(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "hostsrv",
                    "labels": {"kubernetes.io/service-name": "hostsrv"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [real_node.net.gateway]}],
                "ports": [{"port": port, "protocol": "TCP"}],
            },
            ns,
        )
        host_ip = wait_for(
            lambda: lookup(stack, ns, name, f"hostsrv.{ns}.svc.cluster.local"), 30, "hostsrv's name"
        )
        assert host_ip == kube.get("v1", "Service", "hostsrv", ns)["spec"]["clusterIP"]  # type: ignore[index]
        # (busybox-static's wget resolves names through static glibc, which cannot load
        # NSS modules; real images resolve normally. nslookup above used CoreDNS.)
        url = f"http://{host_ip}:8000/"

        def fetched() -> bool:
            # Until kube-proxy has the rule, a SYN to the ClusterIP goes unanswered.
            wget = ["/bin/busybox", "timeout", "3", "/bin/busybox", "wget", "-qO-", url]
            r = kubectl(stack, "-n", ns, "exec", name, "--", *wget)
            return r.returncode == 0 and r.stdout == "host server\n"

        wait_for(fetched, 30, f"{url} from inside the pod")


def lookup(stack: Stack, ns: str, pod: str, name: str) -> str | None:
    """`name`'s address as a pod resolves it (busybox nslookup asks the pod's name server)."""
    # It tries every search domain and exits 1 if any fails: the answer is what counts.
    r = kubectl(stack, "-n", ns, "exec", pod, "--", "/bin/busybox", "nslookup", name)
    if "Name:" not in r.stdout:
        return None
    answer = r.stdout.split("Name:", 1)[1]
    addresses = [line.split()[-1] for line in answer.splitlines() if line.startswith("Address")]
    return addresses[0] if addresses else None


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_logs_exec_port_forward_through_the_kubelet(
    stack: Stack, kube: Kube, real_node: RealNode, real_namespace: str, busybox: str
) -> None:
    ns = real_namespace
    run_pod(kube, ns, "web", busybox)
    logs = kubectl(stack, "-n", ns, "logs", "web")
    assert logs.returncode == 0 and "started web" in logs.stdout, logs.stderr
    out = kubectl(stack, "-n", ns, "exec", "web", "--", "/bin/busybox", "id", "-u")
    assert out.returncode == 0 and out.stdout.strip() == "65534", out.stderr
    port = free_port()
    pf = subprocess.Popen(
        [
            str(Binaries.locate().kubectl),
            f"--kubeconfig={stack.kubeconfig}",
            "-n",
            ns,
            "port-forward",
            "pod/web",
            f"{port}:8080",
            "--address=127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/") == PAGE, 20, "port-forward")
    finally:
        pf.terminate()
        pf.wait(5)


def test_pods_reach_the_api_server_through_the_kubernetes_service(
    stack: Stack, kube: Kube, real_node: RealNode, real_namespace: str, busybox: str
) -> None:
    """10.0.0.1:443 from a pod ends at the API server's TLS listener (through kube-proxy
    and the relay on the bridge address): plain HTTP gets Go's TLS server's answer."""
    run_pod(kube, real_namespace, "web", busybox)
    probe = (
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox timeout 3 /bin/busybox nc 10.0.0.1 443"
    )

    def answered() -> bool:
        r = kubectl(
            stack, "-n", real_namespace, "exec", "web", "--", "/bin/busybox", "sh", "-c", probe
        )
        return "Client sent an HTTP request to an HTTPS server" in r.stdout

    wait_for(answered, 30, "the API server through the kubernetes Service")


def kubelet_status(real_node: RealNode, token: str | None) -> int:
    ctx = ssl.create_default_context(cafile=str(real_node.pki.ca_cert))
    req = urllib.request.Request(f"https://{real_node.net.gateway}:10250/pods")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_kubelet_api_authenticates_and_authorizes(
    kube: Kube, real_node: RealNode, namespace: str
) -> None:
    """Anonymous: 401. A ServiceAccount without nodes/proxy: 403. The admin: 200. (Its
    serving certificate verifies against the stack's CA for the node's IP.)"""
    assert kubelet_status(real_node, None) == 401
    assert kubelet_status(real_node, kube.mint_token(namespace, "nobody")) == 403
    assert kubelet_status(real_node, real_node.pki.admin_token()) == 200


def test_node_lifecycle_marks_a_silent_kubelet_not_ready(
    stack: Stack, kube: Kube, real_node: RealNode
) -> None:
    """The node-lifecycle controller: a node whose kubelet stops posting goes Unknown after
    the grace period (50 s), and Ready again when it comes back."""
    stack.stop_part("kubelet")
    try:

        def not_ready() -> str | None:
            node = kube.get("v1", "Node", real_node.name) or {}
            ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            return ready["status"] if ready["status"] != "True" else None

        assert wait_for(not_ready, 120, "the node to turn NotReady", interval=1) == "Unknown"
    finally:
        stack.restart("kubelet")
    assert kube.node_ready(real_node.name)


def kube_chains() -> list[str]:
    found = []
    for tool in IPTABLES:
        try:
            out = subprocess.run([f"{tool}-save"], capture_output=True, text=True).stdout
        except OSError:
            continue
        found += [f"{tool}: {line}" for line in out.splitlines() if line.startswith(":KUBE-")]
    return found


def test_teardown_leaves_nothing_behind(
    stack: Stack, kube: Kube, real_node: RealNode, real_namespace: str, busybox: str
) -> None:
    """Runs last in this module: stops the node with a pod on it and checks the host."""
    run_pod(kube, real_namespace, "web", busybox)
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        real_namespace,
    )
    wait_for(kube_chains, 20, "kube-proxy's chains")
    paths = real_node.paths
    assert Path(f"/sys/fs/cgroup/memory{real_node.net.cgroup_root}").is_dir()
    errors = stack.stop_real_node()
    assert errors == []
    assert kube_chains() == []
    assert not Path(f"/sys/class/net/{real_node.net.bridge}").exists()
    cgroups = [p for p in Path("/sys/fs/cgroup").glob(f"*{real_node.net.cgroup_root}")]
    assert cgroups == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(paths.root) not in mounts
    for d in (paths.containerd_root, paths.containerd_state, paths.kubelet_root):
        assert not d.exists(), d
    shims = [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and str(paths.containerd_socket) in _cmdline(p)
    ]
    assert shims == []
    names = {n["metadata"]["name"] for n in kube.list("v1", "Node")}
    assert names == {"testbed-node"}  # the rest of the stack still runs


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
