"""Helpers for the operator's cluster tests: install the CRD and RBAC, run the operator as a
process under its own ServiceAccount (not as admin), wait for things."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from voicefleet_contract import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    WORKER_KEYS_SUFFIX,
    WORKER_KEYS_TOKEN,
)
from voicefleet_contract.sessions import AUTH_HEADER, bearer
from voicefleet_operator.settings import Settings
from voicefleet_testbed import controlplane as cp
from voicefleet_testbed.kube import Kube
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

REPO = Path(__file__).resolve().parents[2]
FAKE_IMAGE = "voicefleet.dev/testbed/fake-worker:1"  # testbed/images.yaml maps it
CRASH_IMAGE = "voicefleet.dev/test/crash-agent:1"
OPERATOR_NS = "voicefleet-system"
T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float = 60, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # an API blip while waiting is not the test's failure
            last = e
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def install_crd(kube: Kube, file: str = "voiceagent.yaml") -> None:
    """The CRDs in crds/<file>, applied and waited for until established (their kinds
    served), so that what creates their objects right after never races them."""
    crds = [c for c in yaml.safe_load_all((REPO / "crds" / file).read_text()) if c]
    for crd in crds:
        kube.apply(crd)

    def established() -> bool:
        for crd in crds:
            name = crd["metadata"]["name"]
            got = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
            conds = (got or {}).get("status", {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                return False
        return True

    wait_for(established, 30, f"the CRDs of crds/{file} established")
    # Discovery caches of the dynamic client learn the new kinds.
    kube.__dict__.pop("dynamic", None)


def install_images(stack: Stack) -> None:
    """Image-table rules for the tests' workers, put before any existing override."""
    python = "{python}"
    ours: list[dict[str, Any]] = [
        {"image": "voicefleet.dev/test/crash-agent*", "entrypoint": [python, "-c", "import sys; sys.exit(3)"]},
    ]  # fmt: skip
    path = stack.image_override
    existing: list[dict[str, Any]] = yaml.safe_load(path.read_text()) if path.exists() else []
    rules = ours + [r for r in existing or [] if r.get("image") not in {o["image"] for o in ours}]
    path.write_text(yaml.safe_dump(rules))


def install_rbac(kube: Kube) -> str:
    """The operator's ServiceAccount bound to operator/rbac's ClusterRole; returns a token."""
    if kube.get("v1", "Namespace", OPERATOR_NS) is None:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}})
    for f in ("clusterrole.yaml", "clusterrolebinding.yaml"):
        kube.apply(yaml.safe_load((REPO / "operator/rbac" / f).read_text()))
    return kube.mint_token(OPERATOR_NS, "voicefleet-operator", seconds=6 * 3600)


def production_timers() -> list[str]:
    """The operator's own default timers as flags, to put after the tests' short ones
    (benchmarks measure what a user runs: the last of a repeated flag wins)."""
    d = Settings()
    return [
        f"--resync-seconds={d.resync_seconds:g}",
        f"--retry-seconds={d.retry_seconds:g}",
        f"--failover-sweep-seconds={d.failover_sweep_seconds:g}",
    ]


class OperatorProcess:
    """The operator as a process under its own ServiceAccount; `args` are appended to (and,
    for a repeated flag, override) the defaults below. Benchmarks use it too."""

    def __init__(self, stack: Stack, token: str, workdir: Path, args: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.kubeconfig = workdir / "operator.kubeconfig"
        self.kubeconfig.write_text(
            cp.kubeconfig_yaml(
                stack.api_server, stack.pki.ca_cert, token, user="voicefleet-operator"
            )
        )
        # Mode keda's ScaledObjects name the stack's Prometheus (KEDA runs on the host).
        self.prometheus_url = stack.prometheus_url
        self.log = workdir / "operator.log"
        self.metrics_port = free_port()
        self.health_port = free_port()
        # LiveKit's webhooks go to the stack's fixed webhook port (see Stack.webhook_url).
        self.webhook_port = stack.webhook_port
        self.extra_args: list[str] = []  # e.g. ["--webhook-port=0"] for one restart
        self.env: dict[str, str] = {}  # e.g. POD_ID, kopf's name for it in a peering
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = []  # the last start's command line (benchmarks record it)

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "voicefleet_operator",
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            f"--default-image={FAKE_IMAGE}",
            "--resync-seconds=5",
            "--log-format=text",
            f"--webhook-port={self.webhook_port}",
            "--failover-sweep-seconds=3",
            f"--prometheus-url={self.prometheus_url}",
            *self.args,
            *self.extra_args,
        ]  # fmt: skip
        self.argv = argv
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | self.env
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(self.healthy, 60, "operator liveness endpoint")

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}: {self.tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return str(r.read().decode())

    def reconciles(self, namespace: str, name: str) -> int:
        """Reconciles this operator process finished for one VoiceAgent (any result)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if (
                line.startswith("voicefleet_operator_reconciles_total{")
                and f'namespace="{namespace}"' in line
                and f'voiceagent="{name}"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def wait_reconciled(
        self, namespace: str, name: str, more: int = 1, timeout: float = 30
    ) -> None:
        """Until `more` reconciles (a resync, at the latest) finish after this call."""
        start = self.reconciles(namespace, name)
        wait_for(
            lambda: self.reconciles(namespace, name) >= start + more,
            timeout,
            f"{more} more reconcile(s) of {namespace}/{name}",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    @contextlib.contextmanager
    def restarted_with(
        self, *args: str, before: Callable[[], object] = lambda: None
    ) -> Iterator[None]:
        """The operator restarted with `args` on top of its own for the block (`before`
        runs while it is down), then restarted as it was."""
        self.stop()
        try:
            before()
            self.extra_args = list(args)
            self.start()
            yield
        finally:
            self.stop()
            self.extra_args = []
            self.start()


CUSTOM_METRICS_SERVICE = "voicefleet-custom-metrics"
CUSTOM_METRICS_VERSIONS = ("v1beta2", "v1beta1")  # served by the operator, preferred first
HPA_SA = ("kube-system", "horizontal-pod-autoscaler")  # the HPA controller's identity


def install_custom_metrics_api(stack: Stack, kube: Kube, certs: Path) -> list[str]:
    """Everything `custom.metrics.k8s.io` served by the operator needs in the stack: its
    serving certificate (tls.crt, tls.key in `certs`, for `<service>.<ns>.svc`, checked by
    the API server against the APIService's caBundle), operator/rbac/custom-metrics.yaml,
    an ExternalName Service `localhost` (the operator is a host process: EndpointSlices
    may not hold loopback addresses) and one APIService per version. Returns the operator
    flags that serve it; the APIServices turn Available once an operator runs with them."""
    port = free_port()
    svc = CUSTOM_METRICS_SERVICE
    cert, key = stack.pki.issue(svc, svc, server_names=(f"{svc}.{OPERATOR_NS}.svc",))
    certs.mkdir(parents=True, exist_ok=True)
    (certs / "tls.crt").write_bytes(cert.read_bytes())
    (certs / "tls.key").write_bytes(key.read_bytes())
    kube.mint_token(*HPA_SA)  # creates the HPA controller's ServiceAccount if absent
    rbac = (REPO / "operator/rbac/custom-metrics.yaml").read_text()
    for obj in (d for d in yaml.safe_load_all(rbac) if d):
        kube.apply(obj)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc, "namespace": OPERATOR_NS},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        }
    )
    for v, priority in zip(CUSTOM_METRICS_VERSIONS, (200, 100), strict=True):
        kube.apply(
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": f"{v}.custom.metrics.k8s.io"},
                "spec": {
                    "service": {"name": svc, "namespace": OPERATOR_NS, "port": port},
                    "group": "custom.metrics.k8s.io",
                    "version": v,
                    "caBundle": base64.b64encode(stack.pki.ca_cert.read_bytes()).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": priority,
                },
            }
        )
    return [f"--custom-metrics-port={port}", f"--custom-metrics-cert-dir={certs}"]


def custom_metrics_available(kube: Kube) -> bool:
    """Every version's APIService Available (the API server reaches the operator)."""
    for v in CUSTOM_METRICS_VERSIONS:
        got = kube.get("apiregistration.k8s.io/v1", "APIService", f"{v}.custom.metrics.k8s.io")
        conds = (got or {}).get("status", {}).get("conditions") or []
        if not any(c["type"] == "Available" and c["status"] == "True" for c in conds):
            return False
    return True


def secrets(kube: Kube, namespace: str, livekit_secret: str = "s" * 32) -> None:
    """The LiveKit credentials and OpenAI key Secrets a VoiceAgent names. Pass the stack's
    `livekit_secret` when its workers must really register with LiveKit."""
    for name, data in (
        ("livekit", {"apiKey": LIVEKIT_KEY, "apiSecret": livekit_secret}),
        ("openai", {"apiKey": "sk-test"}),
    ):
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "stringData": data,
            }
        )


def sessions_headers(kube: Kube, pod: dict[str, Any]) -> dict[str, str]:
    """The `Authorization` a worker pod's `/sessions` wants: its VoiceAgent's token from
    the worker-keys Secret the operator made (none when there is no such Secret)."""
    meta = pod["metadata"]
    va = (meta.get("labels") or {}).get("app.kubernetes.io/instance", "")
    secret = kube.get("v1", "Secret", f"{va}{WORKER_KEYS_SUFFIX}", meta["namespace"])
    raw = ((secret or {}).get("data") or {}).get(WORKER_KEYS_TOKEN)
    return {AUTH_HEADER: bearer(base64.b64decode(raw).decode())} if raw else {}


def voiceagent(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def get_va(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(API_VERSION, KIND, name, namespace)


def condition(va: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((va or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def table(kube: Kube, namespace: str) -> dict[str, Any]:
    """What `kubectl get va` prints: the server-side Table with the printer columns."""
    resp = kube.api.call_api(
        *kube.api.param_serialize(
            "GET",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
            header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
            auth_settings=["BearerToken"],
        )
    )
    return dict(json.loads(resp.read()))  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def running_operator(
    stack: Stack, kube: Kube, directory: Path, args: Sequence[str] = ()
) -> Iterator[OperatorProcess]:
    """The CRD, the images and the operator's RBAC installed, and an operator process of
    this checkout (with `args` besides the defaults) running against `stack` while in the
    block (its log tail printed after)."""
    install_crd(kube)
    install_images(stack)
    op = OperatorProcess(stack, install_rbac(kube), directory, args)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print(f"operator log tail:\n{op.tail()}")
