"""The real node's process shell: writes the configs (config.py), creates the bridge,
starts containerd, CoreDNS, the kubelet and kube-proxy through the stack, imports images
into containerd, and tears it all down (teardown.py).

One real node per machine: kube-proxy's iptables chains (KUBE-*) have fixed names in the
host's network namespace, so two nodes would overwrite each other's Service rules. A
machine-wide lock (held by the node's containerd process) says which stack has it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..binaries import NodeBinaries
from ..pki import Pki
from ..procs import ProcRef, spawn
from . import apiproxy
from . import config as c
from .teardown import Host

LOCK_FILE = Path("/run/voicefleet-realnode.lock")
OWNER_FILE = Path("/run/voicefleet-realnode.owner")
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class NodeBusy(RuntimeError):
    pass


@contextlib.contextmanager
def machine_lock(timeout: float) -> Iterator[None]:
    """Hold the machine's real-node lock for a moment (start checks, tear-down)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    owner = OWNER_FILE.read_text().strip() if OWNER_FILE.exists() else "?"
                    raise NodeBusy(
                        f"another testbed runs this machine's real node (state dir {owner}); "
                        f"stop it first: testbed --dir {owner} down"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_holder() -> str | None:
    """The state dir of the stack that runs this machine's real node, or None."""
    try:
        with machine_lock(timeout=0):
            return None
    except NodeBusy:
        return OWNER_FILE.read_text().strip() if OWNER_FILE.exists() else "?"


@dataclass(frozen=True)
class RealNode:
    stack_dir: Path
    net: c.PodNet
    bins: NodeBinaries
    pki: Pki
    api_server: str
    service_cidr: str

    @property
    def name(self) -> str:
        return c.NODE_NAME

    @property
    def paths(self) -> c.NodePaths:
        return c.NodePaths(self.stack_dir / "realnode")

    @property
    def ip_forward_record(self) -> Path:
        """net.ipv4.ip_forward as it was before the node started."""
        return self.paths.root / "ip_forward.before"

    @property
    def logs(self) -> Path:
        return self.stack_dir / "logs"

    # --- set-up ----------------------------------------------------------------------
    def prepare(self, host: Host | None = None) -> None:
        """Certificates, kubeconfigs, configs and the bridge; stale state of a node this
        stack ran before (killed without tear-down) goes first."""
        host = host or Host([])
        with machine_lock(timeout=0):
            # Holding the lock: no real node runs, so any KUBE-* chain is a dead one's.
            host.remove_iptables(self.net.network_name)
            self._remove_state(host)
        p = self.paths
        for d in (p.root, p.cni_conf_dir, p.ipam_dir, p.kubelet_root, p.pod_logs, p.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        # The node must leave the host's forwarding as it found it (a test checks).
        self.ip_forward_record.write_text(IP_FORWARD.read_text())
        ca = self.pki.ca_cert
        kubelet_cert, kubelet_key = self.pki.issue(
            "kubelet-serving",
            f"system:node:{self.name}",
            ("system:nodes",),
            server_names=(self.name,),
            server_ips=(self.net.gateway,),
        )
        idents = {
            "kubelet": (f"system:node:{self.name}", ("system:nodes",)),
            "kube-proxy": ("system:kube-proxy", ()),
            "coredns": ("system:coredns", ()),
        }
        for who, (cn, orgs) in idents.items():
            cert, key = self.pki.issue(who, cn, orgs)
            _write_json(p.kubeconfig(who), c.cert_kubeconfig(self.api_server, ca, cert, key, cn))
        _write_json(p.cni_conf_dir / "10-voicefleet.conflist", c.cni_conflist(
            self.net, p.ipam_dir, self.service_cidr))  # fmt: skip
        p.containerd_config.parent.mkdir(parents=True, exist_ok=True)
        p.containerd_config.write_text(
            c.containerd_config(
                p, self.bins.pause_image, str(self.bins.cni_bin_dir), str(self.bins.runc)
            )
        )
        _write_json(p.kubelet_config, c.kubelet_config(p, self.net, ca, kubelet_cert, kubelet_key))
        _write_json(p.kube_proxy_config, c.kube_proxy_config(p.kubeconfig("kube-proxy"), self.net))
        p.resolv_conf.write_text(c.resolv_conf(self.net))
        self._create_cgroup_root()
        self._create_bridge()

    def _create_cgroup_root(self) -> None:
        """The kubelet wants its cgroup root to exist in every v1 hierarchy; a new cpuset
        group starts with no CPUs or memory nodes, so it gets its parent's."""
        base = Path("/sys/fs/cgroup")
        for hierarchy in base.iterdir():
            if not hierarchy.is_dir() or hierarchy.is_symlink() or hierarchy.name == "unified":
                continue
            group = hierarchy / self.net.cgroup_root.strip("/")
            group.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / name).exists() and not (group / name).read_text().strip():
                    (group / name).write_text((hierarchy / name).read_text())

    def _create_bridge(self) -> None:
        """The bridge exists before the kubelet starts: its address is the node IP. The CNI
        bridge plugin finds it and attaches pods."""
        br, cidr = self.net.bridge, f"{self.net.gateway}/{self.net.subnet.prefixlen}"
        if not Path(f"/sys/class/net/{br}").exists():
            _ip("link", "add", br, "type", "bridge")
        addrs = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", br], capture_output=True, text=True
        ).stdout
        if f" {cidr} " not in addrs:
            _ip("addr", "add", cidr, "dev", br)
        _ip("link", "set", br, "up")

    def apiserver_client(self) -> tuple[Path, Path]:
        """The API server's client certificate for the kubelet API (logs, exec, port-forward)."""
        return self.pki.issue(APISERVER_KUBELET_CLIENT, APISERVER_KUBELET_CLIENT)

    def cluster_objects(self) -> list[c.JSON]:
        """RBAC for the node's components and the kube-dns Service (applied before start)."""
        return [
            c.apiserver_kubelet_client_rbac(APISERVER_KUBELET_CLIENT),
            *c.coredns_rbac(),
            *c.kube_dns_objects(self.net),
            c.kubernetes_endpoints(self.net, apiproxy.PORT),
        ]

    # --- processes -------------------------------------------------------------------
    def start_containerd(self) -> ProcRef:
        OWNER_FILE.write_text(str(self.stack_dir) + "\n")
        # flock(1) holds the machine's real-node lock for as long as containerd runs.
        argv = ["flock", "--nonblock", "--conflict-exit-code", "75", str(LOCK_FILE),
                *c.containerd_argv(self.bins.containerd, self.paths)]  # fmt: skip
        env = dict(os.environ)
        env["PATH"] = f"{self.bins.containerd.parent}:{env.get('PATH', '')}"  # the shim
        return spawn("containerd", argv, self.logs / "containerd.log", env=env)

    def containerd_ready(self) -> bool:
        r = self.ctr("version")
        if r.returncode != 0:
            return False
        if not self.has_image(self.bins.pause_image):
            self.import_image(self.bins.pause_archive)
        return True

    def start_coredns(self, health_port: int, ready_port: int) -> ProcRef:
        self.paths.corefile.write_text(
            c.corefile(self.net, self.paths.kubeconfig("coredns"), health_port, ready_port)
        )
        argv = c.coredns_argv(self.bins.coredns, self.paths.corefile)
        return spawn("coredns", argv, self.logs / "coredns.log", cwd=self.paths.root)

    def start_kubelet(self) -> ProcRef:
        argv = c.kubelet_argv(
            self.bins.kubelet, self.paths, self.net, self.paths.kubeconfig("kubelet")
        )
        return spawn("kubelet", argv, self.logs / "kubelet.log")

    def start_api_relay(self) -> ProcRef:
        port = self.api_server.rsplit(":", 1)[1]
        argv = [sys.executable, "-m", "voicefleet_testbed.realnode.apiproxy",
                f"--listen={self.net.gateway}:{apiproxy.PORT}", f"--to=127.0.0.1:{port}"]  # fmt: skip
        return spawn("apiserver-relay", argv, self.logs / "apiserver-relay.log")

    def api_relay_ready(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection((self.net.gateway, apiproxy.PORT), timeout=1),
        ):
            return True
        return False

    def start_kube_proxy(self) -> ProcRef:
        argv = c.kube_proxy_argv(self.bins.kube_proxy, self.paths)
        return spawn("kube-proxy", argv, self.logs / "kube-proxy.log")

    def kube_proxy_healthy(self) -> bool:
        return _http_ok(f"http://{self.net.gateway}:10256/healthz")

    # --- images and containers --------------------------------------------------------
    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bins.ctr), "--address", str(self.paths.containerd_socket),
                "--namespace", "k8s.io", *args]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def crictl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """crictl against this node's containerd, e.g. crictl("ps", "-o", "json")."""
        endpoint = f"unix://{self.paths.containerd_socket}"
        argv = [str(self.bins.crictl), "--runtime-endpoint", endpoint,
                "--image-endpoint", endpoint, "--timeout", "20s", *args]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def has_image(self, ref: str) -> bool:
        r = self.ctr("images", "list", "--quiet", f"name=={ref}")
        return r.returncode == 0 and ref in r.stdout.split()

    def import_image(self, oci_archive: Path) -> list[str]:
        """Import an OCI archive (`buildah push IMG oci-archive:FILE:IMG`) into the node's
        containerd, where the kubelet finds it by name (imagePullPolicy IfNotPresent or
        Never: nothing is ever pulled). Returns the image names imported."""
        r = self.ctr("images", "import", "--all-platforms", str(oci_archive), timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"ctr images import {oci_archive} failed: {r.stderr.strip()}")
        # "unpacking NAME (sha256:...)...done" per image
        names = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("unpacking ")]
        return names or [line.split()[0] for line in r.stdout.splitlines() if line.strip()]

    # --- tear-down -------------------------------------------------------------------
    def remove_pods(self, host: Host) -> None:
        """Stop and remove every pod sandbox (CNI DEL releases the IPs and veths) while
        containerd still runs and the kubelet no longer does."""
        if not self.paths.containerd_socket.exists():
            return
        r = self.crictl("rmp", "--all", "--force", timeout=120)
        if r.returncode != 0 and "connect" not in r.stderr:
            host.errors.append(f"crictl rmp: {r.stderr.strip()[-300:]}")

    def teardown(self, host: Host) -> None:
        """What is left once the node's processes have stopped (tear-down in stack.down)."""
        host.kill_shims(self.paths.containerd_socket)
        with machine_lock(timeout=30):
            host.remove_iptables(self.net.network_name)
            self._remove_state(host)
            with contextlib.suppress(OSError):
                if OWNER_FILE.read_text().strip() == str(self.stack_dir):
                    OWNER_FILE.unlink()

    def _remove_state(self, host: Host) -> None:
        p = self.paths
        host.kill_shims(p.containerd_socket)
        host.unmount([p.root, p.run_dir])
        host.remove_cgroups(self.net.cgroup_root)
        host.delete_link(self.net.bridge)
        for d in (p.containerd_root, p.containerd_state, p.kubelet_root, p.ipam_dir, p.pod_logs,
                  p.run_dir):  # fmt: skip
            shutil.rmtree(d, ignore_errors=True)
        for cached in Path("/var/lib/cni/results").glob(f"{self.net.network_name}-*"):
            cached.unlink(missing_ok=True)


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _write_json(path: Path, body: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2))
    path.chmod(0o600)


def _http_ok(url: str) -> bool:
    try:
        ctx = ssl.create_default_context() if url.startswith("https") else None
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
            return bool(r.status == 200)
    except OSError:
        return False
