"""Where the testbed's infrastructure binaries live, by version (see testbed/versions.env)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TESTBED_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = TESTBED_DIR.parent
VERSIONS_FILE = TESTBED_DIR / "versions.env"
BUILD_SCRIPT = TESTBED_DIR / "build" / "binaries.sh"


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("VOICEFLEET_CACHE", Path.home() / ".cache" / "voicefleet"))


class MissingBinary(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    kube_scheduler: Path  # built with the real node's parts; every stack runs it
    livekit_server: Path
    helm: Path
    actionlint: Path
    monitoring_crds: Path  # prometheus-operator's CRD files (a directory)
    prometheus: Path | None
    promtool: Path | None
    redis_server: Path | None  # Debian's; only stacks with Redis (multi-node LiveKit) need it

    @classmethod
    def locate(cls) -> Binaries:
        v = versions()
        b = cache_dir() / "bin"
        k8s = b / f"kubernetes-{v['KUBERNETES_VERSION']}"
        prom = shutil.which("prometheus")
        promtool = shutil.which("promtool")
        return cls(
            etcd=b / f"etcd-{v['ETCD_VERSION']}" / "etcd",
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kubectl=k8s / "kubectl",
            kube_scheduler=b / f"kubernetes-node-{v['KUBERNETES_VERSION']}" / "kube-scheduler",
            livekit_server=b / f"livekit-{v['LIVEKIT_VERSION']}" / "livekit-server",
            helm=b / f"helm-{v['HELM_VERSION']}" / "helm",
            actionlint=b / f"actionlint-{v['ACTIONLINT_VERSION']}" / "actionlint",
            monitoring_crds=b / f"prometheus-operator-crds-{v['PROMETHEUS_OPERATOR_VERSION']}",
            prometheus=Path(prom) if prom else None,
            promtool=Path(promtool) if promtool else None,
            redis_server=Path(redis) if (redis := shutil.which("redis-server")) else None,
        )

    def missing(self) -> list[str]:
        required = [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kubectl,
            self.kube_scheduler,
            self.livekit_server,
        ]
        return [str(p) for p in required if not p.is_file()]

    def require(self) -> Binaries:
        missing = self.missing()
        if missing:
            raise MissingBinary(
                "testbed binaries missing: "
                + ", ".join(missing)
                + f"\n  build them with: make binaries  (or bash {BUILD_SCRIPT})"
            )
        return self

    def require_redis(self) -> Path:
        if self.redis_server is None:
            raise MissingBinary(
                "redis-server not found (a stack with Redis or several LiveKit nodes needs it)"
                f"\n  install it with: make binaries  (or bash {BUILD_SCRIPT} redis)"
            )
        return self.redis_server


@dataclass(frozen=True)
class NodeBinaries:
    """The real node's parts (testbed/build/binaries.sh node)."""

    kubelet: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    coredns: Path
    crictl: Path
    pause_archive: Path
    pause_image: str
    runc: Path
    cni_bin_dir: Path

    @classmethod
    def locate(cls) -> NodeBinaries:
        v = versions()
        b = cache_dir() / "bin"
        k8s = b / f"kubernetes-node-{v['KUBERNETES_VERSION']}"
        ctd = b / f"containerd-{v['CONTAINERD_VERSION']}"
        return cls(
            kubelet=k8s / "kubelet",
            kube_proxy=k8s / "kube-proxy",
            containerd=ctd / "containerd",
            containerd_shim=ctd / "containerd-shim-runc-v2",
            ctr=ctd / "ctr",
            coredns=b / f"coredns-{v['COREDNS_VERSION']}" / "coredns",
            crictl=b / f"crictl-{v['CRICTL_VERSION']}" / "crictl",
            pause_archive=b / f"pause-{v['PAUSE_VERSION']}" / "pause.oci.tar",
            pause_image=f"voicefleet.dev/testbed/pause:{v['PAUSE_VERSION']}",
            runc=Path(shutil.which("runc") or "/usr/sbin/runc"),
            cni_bin_dir=Path("/usr/lib/cni"),
        )

    def missing(self) -> list[str]:
        files = [
            self.kubelet, self.kube_proxy, self.containerd,
            self.containerd_shim, self.ctr, self.coredns, self.crictl, self.pause_archive,
            self.runc, self.cni_bin_dir / "bridge", self.cni_bin_dir / "host-local",
            self.cni_bin_dir / "loopback", self.cni_bin_dir / "portmap",
        ]  # fmt: skip
        return [str(p) for p in files if not p.is_file()]

    def require(self) -> NodeBinaries:
        missing = self.missing()
        if missing:
            raise MissingBinary(
                "real node binaries missing: "
                + ", ".join(missing)
                + f"\n  build them with: make binaries  (or bash {BUILD_SCRIPT} node)"
            )
        return self


def ensure_built(*targets: str) -> Binaries:
    """Build whatever is missing (the script reuses the cache) and return the paths."""
    found = Binaries.locate()
    if found.missing():
        subprocess.run(["bash", str(BUILD_SCRIPT), *(targets or ("all",))], check=True)
    return Binaries.locate().require()
