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
    livekit_server: Path
    helm: Path
    prometheus: Path | None
    promtool: Path | None

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
            livekit_server=b / f"livekit-{v['LIVEKIT_VERSION']}" / "livekit-server",
            helm=b / f"helm-{v['HELM_VERSION']}" / "helm",
            prometheus=Path(prom) if prom else None,
            promtool=Path(promtool) if promtool else None,
        )

    def missing(self) -> list[str]:
        required = [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kubectl,
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


def ensure_built(*targets: str) -> Binaries:
    """Build whatever is missing (the script reuses the cache) and return the paths."""
    found = Binaries.locate()
    if found.missing():
        subprocess.run(["bash", str(BUILD_SCRIPT), *(targets or ("all",))], check=True)
    return Binaries.locate().require()
