"""The real node's configuration renderers and tear-down decisions (no processes)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from voicefleet_testbed.realnode import config as c
from voicefleet_testbed.realnode import scheduling, teardown

PATHS = c.NodePaths(Path("/s/realnode"))


@pytest.mark.parametrize(
    ("index", "subnet", "gateway", "bridge"),
    [
        (1, "10.244.1.0/24", "10.244.1.1", "vfnode1"),
        (254, "10.244.254.0/24", "10.244.254.1", "vfnode254"),
    ],
)
def test_pod_net(index: int, subnet: str, gateway: str, bridge: str) -> None:
    net = c.PodNet(index)
    assert (str(net.subnet), net.gateway, net.bridge) == (subnet, gateway, bridge)
    assert len(net.bridge) <= 15


@pytest.mark.parametrize("index", [0, 255, -1])
def test_pod_net_rejects_bad_index(index: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.254"):
        c.PodNet(index)


@pytest.mark.parametrize(
    ("default", "used", "choice", "want"),
    [
        (True, set(), 77, 1),  # the checkout's stack: always 10.244.1.0/24 when free
        (True, {1}, 77, 77),
        (False, set(), 77, 77),
        (False, {77, 78}, 77, 79),
        (False, {254}, 254, 2),  # wraps, never 1 (kept for the checkout's stack) or 0
    ],
)
def test_pick_pod_net(default: bool, used: set[int], choice: int, want: int) -> None:
    assert c.pick_pod_net(default, used, choice).index == want


@pytest.mark.parametrize(
    ("routes", "want"),
    [
        ("default via 192.168.1.1 dev eth0\n10.244.3.0/24 dev vfnode3 proto kernel", {3}),
        ("10.244.4.0/23 dev x", {4, 5}),
        ("10.0.0.0/8 dev x", set(range(1, 255))),
        ("172.17.0.0/16 dev docker0", set()),
    ],
)
def test_used_pod_net_indexes(routes: str, want: set[int]) -> None:
    assert c.used_pod_net_indexes(routes) == want


def test_cni_keeps_traffic_on_the_machine() -> None:
    conf = c.cni_conflist(c.PodNet(7), Path("/s/ipam"), "10.0.0.0/24")
    bridge, portmap = conf["plugins"]
    assert (bridge["type"], bridge["bridge"], portmap["type"]) == ("bridge", "vfnode7", "portmap")
    # The stack puts the gateway address on the bridge; isGateway would turn on ip_forward.
    assert not bridge["isGateway"] and not bridge["ipMasq"] and not bridge["isDefaultGateway"]
    # Routes: the Service range only (no default route out of a pod).
    assert bridge["ipam"]["routes"] == [{"dst": "10.0.0.0/24", "gw": "10.244.7.1"}]
    assert bridge["ipam"]["dataDir"] == "/s/ipam"


def test_containerd_config() -> None:
    doc = tomllib.loads(c.containerd_config(PATHS, "pause:1", "/usr/lib/cni", "/usr/sbin/runc"))
    assert doc["version"] == 3
    assert doc["root"].startswith("/s/realnode/") and doc["state"].startswith("/s/realnode/")
    plugins = doc["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"SystemdCgroup": False, "BinaryName": "/usr/sbin/runc"}
    assert runtime["cni"]["conf_dir"] == "/s/realnode/cni/net.d"
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "pause:1"
    assert plugins["io.containerd.grpc.v1.cri"]["stream_server_address"] == "127.0.0.1"


def test_kubelet_authenticates_and_authorizes_through_the_api() -> None:
    cfg = c.kubelet_config(PATHS, c.PodNet(2), Path("/ca"), Path("/crt"), Path("/key"))
    assert cfg["authentication"]["anonymous"] == {"enabled": False}
    assert cfg["authentication"]["webhook"] == {"enabled": True}
    assert cfg["authentication"]["x509"] == {"clientCAFile": "/ca"}
    assert cfg["authorization"] == {"mode": "Webhook"}
    assert cfg["readOnlyPort"] == 0
    assert (cfg["address"], cfg["healthzBindAddress"]) == ("10.244.2.1", "10.244.2.1")
    # cgroup v1 here
    assert (cfg["failCgroupV1"], cfg["cgroupDriver"], cfg["failSwapOn"]) == (
        False,
        "cgroupfs",
        False,
    )
    assert cfg["resolvConf"] == "/s/realnode/resolv.conf"
    argv = c.kubelet_argv(Path("/k"), PATHS, c.PodNet(2), Path("/kc"))
    assert "--node-ip=10.244.2.1" in argv and f"--hostname-override={c.NODE_NAME}" in argv


def test_kube_proxy_leaves_host_settings_alone() -> None:
    cfg = c.kube_proxy_config(Path("/kc"), c.PodNet(2))
    assert cfg["mode"] == "iptables"
    assert cfg["nodePortAddresses"] == ["10.244.2.1/32"]
    assert cfg["conntrack"]["maxPerCore"] == 0
    assert cfg["iptables"]["localhostNodePorts"] is False


def test_cluster_dns_forwards_nothing() -> None:
    text = c.corefile(c.PodNet(2), Path("/kc"), 1, 2)
    assert "forward" not in text and "proxy" not in text
    assert text.startswith("cluster.local:53 {") and "bind 10.244.2.1" in text
    svc, eps = c.kube_dns_objects(c.PodNet(2))
    assert svc["spec"]["clusterIP"] == c.DNS_SERVICE_IP
    assert eps["endpoints"][0]["addresses"] == ["10.244.2.1"]
    assert c.resolv_conf(c.PodNet(2)) == "nameserver 10.244.2.1\n"


def test_admission_defaults_and_namespace_overrides(tmp_path: Path) -> None:
    files = scheduling.admission_files(tmp_path, default="hollow")
    selector = json.loads(files[tmp_path / "podnodeselector.yaml"])
    assert selector["podNodeSelectorPluginConfig"]["clusterDefaultNodeSelector"] == (
        "voicefleet.dev/node=hollow"
    )
    tol = json.loads(files[tmp_path / "podtolerationrestriction.yaml"])
    assert tol["default"] == [scheduling.HOLLOW_TOLERATION]
    real = json.loads(
        scheduling.admission_files(tmp_path, default="real")[
            tmp_path / "podtolerationrestriction.yaml"
        ]
    )
    assert real["default"] == []
    assert scheduling.REAL_NODE_ANNOTATIONS == {
        "scheduler.alpha.kubernetes.io/node-selector": "voicefleet.dev/node=real",
        "scheduler.alpha.kubernetes.io/defaultTolerations": "[]",
    }


def test_pod_security_default_is_privileged_unless_the_stack_asks_for_restricted(
    tmp_path: Path,
) -> None:
    def level(files: dict[Path, str]) -> Any:
        main = json.loads(files[tmp_path / "admission.yaml"])
        (plugin,) = [p for p in main["plugins"] if p["name"] == "PodSecurity"]
        return json.loads(files[Path(plugin["path"])])

    test_stack = level(scheduling.admission_files(tmp_path))
    assert test_stack["defaults"]["enforce"] == "privileged"
    make_up = level(scheduling.admission_files(tmp_path, default="real", enforce="restricted"))
    assert make_up["kind"] == "PodSecurityConfiguration"
    assert make_up["defaults"] == {"enforce": "restricted", "enforce-version": "latest"}
    assert make_up["exemptions"]["namespaces"] == ["kube-system"]


@pytest.mark.parametrize(
    ("host", "ok"),
    [("127.0.0.1", True), ("127.3.0.9", True), ("10.244.1.1", True),
     ("10.245.0.1", False), ("0.0.0.0", False), ("192.0.2.2", False), ("localhost", False)],
)  # fmt: skip
def test_the_stand_in_binds_only_loopback_or_the_pod_network(host: str, ok: bool) -> None:
    from voicefleet_testbed.realtime.__main__ import _stays_here

    assert _stays_here(host) is ok


SAVE = """# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-DN-abc - [0:0]
:CNI-DN-other - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -j DOCKER
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"voicefleet-vfnode2\\" id: \\"c1\\"" -j CNI-DN-abc
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"othernet\\" id: \\"c2\\"" -j CNI-DN-other
-A CNI-DN-abc -p tcp -m comment --comment "dnat name: \\"voicefleet-vfnode2\\" id: \\"c1\\"" -j DNAT --to-destination 10.244.2.5:80
-A CNI-DN-other -p tcp -m comment --comment "dnat name: \\"othernet\\" id: \\"c2\\"" -j DNAT --to-destination 10.9.0.5:80
-A KUBE-SERVICES -d 10.0.0.10/32 -j KUBE-SVC-X
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
"""


def test_iptables_cleanup_removes_only_the_nodes_chains() -> None:
    cmds = teardown.iptables_cleanup(SAVE, "voicefleet-vfnode2")
    deletes = [x for x in cmds if x[2] == "-D"]
    assert [d[3] for d in deletes] == ["PREROUTING", "OUTPUT", "POSTROUTING", "CNI-HOSTPORT-DNAT"]
    assert all("DOCKER" not in d for d in deletes)
    assert "othernet" not in " ".join(" ".join(d) for d in deletes)
    flushed = {x[3] for x in cmds if x[2] == "-X"}
    assert flushed == {"KUBE-SERVICES", "KUBE-POSTROUTING", "CNI-DN-abc"}
    # rules go before the chains they jump to are deleted
    assert max(cmds.index(d) for d in deletes) < min(i for i, x in enumerate(cmds) if x[2] == "-X")
    assert teardown.iptables_cleanup("*filter\n:INPUT ACCEPT\nCOMMIT\n", "x") == []


def test_mounts_under_deepest_first() -> None:
    info = "\n".join(
        [
            "36 25 0:32 / /s/realnode/kubelet/pods/a/volumes/x rw - tmpfs tmpfs rw",
            "37 25 0:33 / /s/realnode/containerd/state/io.containerd.runtime.v2.task/k8s.io/c/rootfs rw - overlay overlay rw",
            "38 25 0:34 / /s/realnode-other rw - tmpfs tmpfs rw",
            "39 25 0:35 / /other rw - tmpfs tmpfs rw",
        ]
    )
    got = teardown.mounts_under(info, [Path("/s/realnode")])
    assert got == [
        "/s/realnode/containerd/state/io.containerd.runtime.v2.task/k8s.io/c/rootfs",
        "/s/realnode/kubelet/pods/a/volumes/x",
    ]


@pytest.mark.parametrize(
    ("cmdline", "ours"),
    [
        (["/c/containerd-shim-runc-v2", "-namespace", "k8s.io", "-address", "/s/c.sock"], True),
        (["/c/containerd-shim-runc-v2", "-namespace", "k8s.io", "-address", "/t/c.sock"], False),
        (["/usr/bin/python3", "/s/c.sock"], False),
        ([], False),
    ],
)
def test_is_our_shim(cmdline: list[str], ours: bool) -> None:
    assert teardown.is_our_shim(cmdline, Path("/s/c.sock")) is ours


def test_containerd_socket_path_fits_a_unix_socket() -> None:
    deep = c.NodePaths(
        Path("/tmp/pytest-of-root/pytest-66/test_up_twice_status_crash_rec0/tb/realnode")
    )
    assert len(str(deep.containerd_socket) + ".ttrpc") < 104
    assert deep.containerd_socket != c.NodePaths(Path("/other/realnode")).containerd_socket
