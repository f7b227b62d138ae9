"""The real node's configuration, rendered by pure functions (table-tested): the pod
network, containerd, the kubelet, kube-proxy and CoreDNS.

Everything a real node needs lives under the stack directory (`<stack>/realnode/`), except
what the kernel keeps machine-wide: the bridge, iptables chains and cgroups, which carry
the node's own names and are removed on tear-down (teardown.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
NODE_NAME = "testbed-real-node"
# Labels and taint that keep the two kinds of node apart (docs/testbed.md).
NODE_ROLE_LABEL = "voicefleet.dev/node"
HOLLOW_TAINT_KEY = "voicefleet.dev/hollow-node"
CLUSTER_DOMAIN = "cluster.local"
# The kube-dns Service's ClusterIP (the 10th address of the stack's service range).
DNS_SERVICE_IP = "10.0.0.10"
# Pod subnets: 10.244.<index>.0/24, one per stack that runs a real node.
POD_NET_BASE = ipaddress.ip_network("10.244.0.0/16")


@dataclass(frozen=True)
class PodNet:
    """The node's pod network: a bridge whose address is the pods' gateway and the node's IP."""

    index: int  # 1..254

    def __post_init__(self) -> None:
        if not 1 <= self.index <= 254:
            raise ValueError(f"pod network index must be 1..254, got {self.index}")

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        base = int(POD_NET_BASE.network_address)
        return ipaddress.IPv4Network((base + (self.index << 8), 24))

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def bridge(self) -> str:
        return f"vfnode{self.index}"  # at most 15 characters (IFNAMSIZ)

    @property
    def network_name(self) -> str:
        return f"voicefleet-{self.bridge}"

    @property
    def cgroup_root(self) -> str:
        """The kubelet's cgroup root: kubepods lives under it, in every controller."""
        return f"/voicefleet-{self.bridge}"


def pick_pod_net(default_stack: bool, used: set[int], choice: int) -> PodNet:
    """Index 1 for the checkout's own stack; otherwise `choice` (random) or the first free
    index above it, skipping /24s something on the host already routes."""
    if default_stack and 1 not in used:
        return PodNet(1)
    for i in range(254):
        index = (choice - 2 + i) % 253 + 2
        if index not in used:
            return PodNet(index)
    raise RuntimeError("no free pod subnet in 10.244.0.0/16")


def used_pod_net_indexes(routes: str) -> set[int]:
    """Indexes of 10.244.x.0/24 something on the host already routes (`ip -4 route show`
    output); a route covering all of 10.244.0.0/16 takes them all."""
    out: set[int] = set()
    for line in routes.splitlines():
        try:
            net = ipaddress.ip_network(line.split(" ", 1)[0], strict=False)
        except ValueError:
            continue  # "default via ..."
        if not isinstance(net, ipaddress.IPv4Network) or not net.overlaps(POD_NET_BASE):
            continue
        if net.prefixlen <= 16:
            return set(range(1, 255))
        first = int(net.network_address) >> 8 & 0xFF
        last = int(net.broadcast_address) >> 8 & 0xFF
        out.update(range(first, last + 1))
    return out


@dataclass(frozen=True)
class NodePaths:
    root: Path  # <stack>/realnode

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def run_dir(self) -> Path:
        """containerd's sockets: a short path of the node's own (a unix socket path may not
        exceed 104 bytes, and test stacks live deep under /tmp)."""
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path("/run/voicefleet") / digest

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    def kubeconfig(self, who: str) -> Path:
        return self.root / f"{who}.kubeconfig"


def cni_conflist(net: PodNet, ipam_dir: Path, service_cidr: str) -> JSON:
    """bridge + host-local + portmap (containerd brings up lo itself). Pods get a route to
    their /24 and, through the bridge's address, to the Service range only: no default
    route, no masquerade, and the host's ip_forward untouched, so nothing they send can
    leave the machine."""
    return {
        "cniVersion": "1.0.0",
        "name": net.network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                # The stack gives the bridge its gateway address before the kubelet starts
                # (it is the node IP). isGateway would make the plugin do that too, and
                # also turn on the host's net.ipv4.ip_forward on every pod start: left off.
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": str(net.subnet), "gateway": net.gateway}]],
                    "routes": [{"dst": service_cidr, "gw": net.gateway}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_dump(tables: dict[str, JSON], top: JSON) -> str:
    """A small TOML writer: top-level keys, then `[table]` sections of scalars/lists."""
    lines = [f"{k} = {_toml(v)}" for k, v in top.items()]
    for name, body in tables.items():
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def containerd_config(paths: NodePaths, pause_image: str, cni_bin_dir: str, runc: str) -> str:
    cri_rt = "plugins.'io.containerd.cri.v1.runtime'"
    runc_rt = f"{cri_rt}.containerd.runtimes.runc"
    return toml_dump(
        {
            "grpc": {"address": str(paths.containerd_socket)},
            "ttrpc": {"address": str(paths.containerd_socket) + ".ttrpc"},
            "debug": {"address": "", "level": "info"},
            "metrics": {"address": ""},
            # The sandbox image is built here (pause.c) and imported: pinned so the kubelet's
            # image GC keeps it, and never pulled.
            "plugins.'io.containerd.cri.v1.images'": {"snapshotter": "overlayfs"},
            "plugins.'io.containerd.cri.v1.images'.pinned_images": {"sandbox": pause_image},
            cri_rt: {
                # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with
                # "can't get final child's PID from pipe: EOF".
                "restrict_oom_score_adj": True,
                "enable_selinux": False,
                # Pod network namespaces under our state dir, not the host's /run/netns.
                "netns_mounts_under_state_dir": True,
            },
            f"{cri_rt}.containerd": {"default_runtime_name": "runc"},
            runc_rt: {"runtime_type": "io.containerd.runc.v2"},
            # cgroup v1 with the cgroupfs driver (no systemd here), as the kubelet.
            f"{runc_rt}.options": {"SystemdCgroup": False, "BinaryName": runc},
            f"{cri_rt}.cni": {
                "bin_dirs": [cni_bin_dir],
                "conf_dir": str(paths.cni_conf_dir),
                "max_conf_num": 1,
            },
            # exec/attach/port-forward streams: the kubelet proxies them, on loopback.
            "plugins.'io.containerd.grpc.v1.cri'": {
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
            },
            "plugins.'io.containerd.internal.v1.opt'": {"path": str(paths.root / "opt")},
        },
        {
            "version": 3,
            # NRI's socket is machine-wide (/var/run/nri); nothing here uses it.
            "disabled_plugins": ["io.containerd.nri.v1.nri"],
            "root": str(paths.containerd_root),
            "state": str(paths.containerd_state),
        },
    )


KUBELET_PORT = 10250


def kubelet_config(paths: NodePaths, net: PodNet, ca_file: Path, cert: Path, key: Path) -> JSON:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # On the bridge address: fixed ports cannot clash with another stack's.
        "address": net.gateway,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": net.gateway,
        "healthzPort": 10248,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        # The apiserver authenticates with its client certificate; everyone else with a
        # token the kubelet checks with the apiserver (TokenReview, SubjectAccessReview).
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        # This machine has cgroup v1 (real clusters: v2, systemd driver).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": net.cgroup_root,
        "failSwapOn": False,
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # Not the host's resolv.conf: its name servers are outside addresses.
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        # The node's iptables belong to kube-proxy; the kubelet's utility chains are not
        # needed (and would be one more thing to clean up).
        "makeIPTablesUtilChains": False,
        "serializeImagePulls": False,
        "maxPods": 110,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "staticPodPath": "",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "volumeStatsAggPeriod": "0s",
    }


def kubelet_argv(kubelet: Path, paths: NodePaths, net: PodNet, kubeconfig: Path) -> list[str]:
    return [
        str(kubelet),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.kubelet_root / 'pki'}",
        f"--node-ip={net.gateway}",
        f"--hostname-override={NODE_NAME}",
        f"--node-labels={NODE_ROLE_LABEL}=real",
        "--v=1",
    ]


def containerd_argv(containerd: Path, paths: NodePaths) -> list[str]:
    return [str(containerd), f"--config={paths.containerd_config}"]


def kube_proxy_config(kubeconfig: Path, net: PodNet) -> JSON:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": str(net.subnet),
        # On the bridge address: fixed ports cannot clash with another stack's.
        "healthzBindAddress": f"{net.gateway}:10256",
        "metricsBindAddress": f"{net.gateway}:10249",
        # NodePorts on the bridge address only, never on the host's outside addresses.
        "nodePortAddresses": [f"{net.gateway}/32"],
        # Leave the host's sysctls alone (conntrack table size and timeouts, route_localnet).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }


def kube_proxy_argv(kube_proxy: Path, paths: NodePaths) -> list[str]:
    return [str(kube_proxy), f"--config={paths.kube_proxy_config}", "--v=1"]


def corefile(net: PodNet, kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """Cluster DNS: answers cluster.local from the API on the bridge address; any other
    name is refused (no `forward`: nothing is ever asked of an outside server)."""
    return (
        f"{CLUSTER_DOMAIN}:53 {{\n"
        f"    bind {net.gateway}\n"
        "    errors\n"
        f"    health 127.0.0.1:{health_port}\n"
        f"    ready 127.0.0.1:{ready_port}\n"
        f"    kubernetes {CLUSTER_DOMAIN} {{\n"
        f"        kubeconfig {kubeconfig} testbed\n"
        "        pods insecure\n"
        "    }\n"
        "    cache 30\n"
        "    loadbalance\n"
        "}\n"
    )


def coredns_argv(coredns: Path, corefile_path: Path) -> list[str]:
    return [str(coredns), f"-conf={corefile_path}"]


def resolv_conf(net: PodNet) -> str:
    """The node's resolv.conf (pods with dnsPolicy Default): cluster DNS, nothing outside."""
    return f"nameserver {net.gateway}\n"


def kube_dns_objects(net: PodNet) -> list[JSON]:
    """The kube-dns Service and the EndpointSlice that points it at CoreDNS, which runs as a
    process on the bridge address (a selector-less Service, as for any outside server)."""
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns"},
            },
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": n, "protocol": p, "port": 53, "targetPort": 53} for n, p in ports
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-coredns",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "testbed.voicefleet.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [net.gateway], "conditions": {"ready": True}}],
            "ports": [{"name": n, "protocol": p, "port": 53} for n, p in ports],
        },
    ]


def host_service(namespace: str, name: str, port: int, host: str, host_port: int) -> list[JSON]:
    """A Service `name.namespace.svc:port` for a server that runs on the host (LiveKit, the
    Realtime stand-in) at host:host_port: selector-less, with its EndpointSlice, as a
    cluster names a server outside it."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "tcp", "port": port, "targetPort": host_port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "testbed.voicefleet.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
            "ports": [{"name": "tcp", "port": host_port, "protocol": "TCP"}],
        },
    ]


def kubernetes_endpoints(net: PodNet, port: int) -> JSON:
    """The `kubernetes` Service's endpoint for pods: the API server relay on the bridge
    address (the API server itself listens on loopback only, so it reconciles none)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes-testbed-relay",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "testbed.voicefleet.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [net.gateway], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "protocol": "TCP", "port": port}],
    }


def coredns_rbac() -> list[JSON]:
    """What CoreDNS's kubernetes plugin reads, for its own user (a client certificate)."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "testbed:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "testbed:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "testbed:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
            ],
        },
    ]


def apiserver_kubelet_client_rbac(user: str) -> JSON:
    """The apiserver's client certificate may use the kubelet API (logs, exec,
    port-forward): the bootstrap policy's system:kubelet-api-admin, as kubeadm binds it."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "testbed:apiserver-kubelet-client"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def cert_kubeconfig(server: str, ca_file: Path, cert: Path, key: Path, user: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
        "current-context": "testbed",
    }
