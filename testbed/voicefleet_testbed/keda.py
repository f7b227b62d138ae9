"""KEDA beside the stack, as host processes: its operator (ScaledObjects -> HPAs, the
scalers) and its metrics API server (`v1beta1.external.metrics.k8s.io`, which the
controller-manager's HPA controller asks). Only stacks started with `keda=True` (or
`add_keda()`) run it; binaries and CRDs come from `testbed/build/binaries.sh keda`.

How it is wired, all on 127.0.0.1:
- the KEDA CRDs as KEDA's Go module ships them (config/crd/bases);
- a namespace `keda` with two ServiceAccounts, each with only what its process uses (KEDA's
  own manifests give the operator `get` on every resource and every Secret in the cluster;
  here it gets the worker Deployments and their scale subresource, and it reads Secrets in
  `keda` only: KEDA_RESTRICT_SECRET_ACCESS, since a Prometheus trigger needs none);
- the processes authenticate with tokens minted for those ServiceAccounts (kubeconfigs
  in the state dir, mode 0600), never the admin token;
- the operator's gRPC metrics service and the metrics server talk mTLS with a certificate
  of the stack's CA (cert rotation off: the stack issues it);
- the APIService points at an ExternalName Service `localhost`: the API server's cluster
  routing dials it as named (EndpointSlices may not hold loopback addresses, so endpoint
  routing cannot reach a host process) and checks the metrics server's certificate for
  `keda-metrics-apiserver.keda.svc` against the APIService's caBundle.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from . import controlplane as cp
from .binaries import BUILD_SCRIPT, MissingBinary, cache_dir, versions
from .pki import Pki
from .procs import ProcRef, spawn, wait_for

if TYPE_CHECKING:
    from .kube import Kube

JSON = dict[str, Any]
NAMESPACE: Final = "keda"
OPERATOR: Final = "keda-operator"  # part name, ServiceAccount
METRICS_SERVER: Final = "keda-metrics-apiserver"  # part name, ServiceAccount, Service
APISERVICE: Final = "v1beta1.external.metrics.k8s.io"
EXTERNAL_METRICS: Final = "/apis/external.metrics.k8s.io/v1beta1"
# Ports a stack with KEDA allocates (ports.py), by state key.
PORTS: Final = (
    "keda-operator-metrics",
    "keda-operator-health",
    "keda-grpc",
    "keda-metrics-apiserver",
    "keda-metrics-apiserver-metrics",
)
PROCESSES: Final = (OPERATOR, METRICS_SERVER)
TOKEN_SECONDS: Final = 7 * 24 * 3600  # a long-lived dev stack; a restart renews it
MANAGER: Final = "testbed"


@dataclass(frozen=True)
class KedaBinaries:
    operator: Path
    metrics_server: Path
    crds: Path  # a directory of CRD files

    @classmethod
    def locate(cls) -> KedaBinaries:
        v, b = versions()["KEDA_VERSION"], cache_dir() / "bin"
        d = b / f"keda-{v}"
        crds = b / f"keda-crds-{v}"  # part of `make binaries`; the binaries are not
        return cls(operator=d / "keda", metrics_server=d / "keda-adapter", crds=crds)

    def missing(self) -> list[str]:
        need = [self.operator, self.metrics_server, self.crds / "keda.sh_scaledobjects.yaml"]
        return [str(p) for p in need if not p.is_file()]

    def require(self) -> KedaBinaries:
        if self.missing():
            raise MissingBinary(
                "KEDA binaries missing: " + ", ".join(self.missing())
                + f"\n  build them with: bash {BUILD_SCRIPT} keda  (~18 min cold on 2 cores)"
            )  # fmt: skip
        return self


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> JSON:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


RW = ["get", "list", "watch", "update", "patch"]
READ = ["get", "list", "watch"]

# What the operator's controllers and its Prometheus scaler use, for Deployment targets.
OPERATOR_RULES: Final = [
    # Its informers cover every KEDA kind (each controller starts with the manager).
    _rule(
        ["keda.sh"],
        [
            f"{r}{sub}"
            for r in ("scaledobjects", "scaledjobs")
            for sub in ("", "/status", "/finalizers")
        ]
        + [
            "triggerauthentications",
            "triggerauthentications/status",
            "clustertriggerauthentications",
            "clustertriggerauthentications/status",
        ],
        RW,
    ),
    _rule(
        ["eventing.keda.sh"],
        [
            "cloudeventsources",
            "cloudeventsources/status",
            "clustercloudeventsources",
            "clustercloudeventsources/status",
        ],
        RW,
    ),
    _rule(["autoscaling"], ["horizontalpodautoscalers"], [*RW, "create", "delete"]),
    # The scale target (its pod template, for env resolution) and its scale subresource
    # (scaling to and from zero, status). KEDA's own role: get on */* and */scale.
    _rule(["apps"], ["deployments"], READ),
    _rule(["apps"], ["deployments/scale"], ["get", "update", "patch"]),
    # ScaledJobs' informer (the controller always runs; no ScaledJob here creates a Job).
    _rule(["batch"], ["jobs"], READ),
    _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
]
# The metrics server reads ScaledObjects (which one serves a metric name) and delegates
# authentication and authorization of the API server's proxied requests.
METRICS_SERVER_RULES: Final = [_rule(["keda.sh"], ["scaledobjects"], READ)]


def _meta(name: str, namespace: str | None = None) -> JSON:
    meta: JSON = {"name": name, "labels": {"app.kubernetes.io/part-of": "keda-testbed"}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def cluster_objects(ca_bundle: bytes, metrics_server_port: int) -> list[JSON]:
    """Namespace, ServiceAccounts, RBAC, the metrics server's Service and APIService."""
    rbac = "rbac.authorization.k8s.io/v1"
    objs: list[JSON] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(NAMESPACE)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(OPERATOR, NAMESPACE)},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(METRICS_SERVER, NAMESPACE),
        },
    ]

    def bind(kind: str, name: str, role_kind: str, role: str, sa: str, ns: str | None) -> JSON:
        return {
            "apiVersion": rbac,
            "kind": kind,
            "metadata": _meta(name, ns),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}],
        }

    objs += [
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": _meta(OPERATOR), "rules": OPERATOR_RULES},
        bind("ClusterRoleBinding", OPERATOR, "ClusterRole", OPERATOR, OPERATOR, None),
        # Its Secret informer (KEDA_RESTRICT_SECRET_ACCESS: Secrets in its namespace only).
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": _meta(OPERATOR, NAMESPACE),
            "rules": [_rule([""], ["secrets"], READ)],
        },
        bind("RoleBinding", OPERATOR, "Role", OPERATOR, OPERATOR, NAMESPACE),
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": _meta(METRICS_SERVER),
            "rules": METRICS_SERVER_RULES,
        },
        bind("ClusterRoleBinding", METRICS_SERVER, "ClusterRole", METRICS_SERVER, METRICS_SERVER, None),
        bind("ClusterRoleBinding", f"{METRICS_SERVER}:auth-delegator", "ClusterRole",
             "system:auth-delegator", METRICS_SERVER, None),
        # The API server's front-proxy CA and header names, which it publishes there.
        bind("RoleBinding", f"{METRICS_SERVER}:auth-reader", "Role",
             "extension-apiserver-authentication-reader", METRICS_SERVER, "kube-system"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(METRICS_SERVER, NAMESPACE),
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": metrics_server_port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": _meta(APISERVICE),
            "spec": {
                "service": {"name": METRICS_SERVER, "namespace": NAMESPACE, "port": metrics_server_port},
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]  # fmt: skip
    return objs


def install_crds(kube: Kube, crds: Path) -> None:
    """KEDA's CRDs, waited for until established (the operator's informers need them all)."""
    names = []
    for f in sorted(crds.glob("*.yaml")):
        for crd in yaml.safe_load_all(f.read_text()):
            if crd:
                kube.apply(crd, manager=MANAGER)
                names.append(crd["metadata"]["name"])

    wait_for(lambda: kube.crds_established(names), 30, "KEDA's CRDs to be established")


@dataclass(frozen=True)
class Keda:
    """KEDA's files in a stack's state dir and how to start and check its processes."""

    stack_dir: Path
    api_server: str
    pki: Pki
    ports: dict[str, int]
    bins: KedaBinaries

    @property
    def certs(self) -> Path:
        """ca.crt, tls.crt, tls.key: where both processes read their gRPC mTLS material."""
        return self.stack_dir / "keda-certs"

    def kubeconfig(self, sa: str) -> Path:
        return self.stack_dir / f"{sa}.kubeconfig"

    def prepare(self, kube: Kube) -> None:
        """CRDs, RBAC, Service and APIService in the cluster; certificates and kubeconfigs
        on disk (each process's own token)."""
        install_crds(kube, self.bins.crds)
        for obj in cluster_objects(
            self.pki.ca_cert.read_bytes(), self.ports["keda-metrics-apiserver"]
        ):
            kube.apply(obj, manager=MANAGER)
        cert, key = self.pki.issue(
            "keda",
            "keda",
            server_names=(
                "localhost",
                f"{METRICS_SERVER}.{NAMESPACE}.svc",  # what the API server's proxy checks
                f"{OPERATOR}.{NAMESPACE}.svc",
                f"{OPERATOR}.{NAMESPACE}.svc.cluster.local",
            ),
            server_ips=("127.0.0.1",),  # the gRPC client dials the operator by address
        )
        self.certs.mkdir(exist_ok=True)
        (self.certs / "ca").mkdir(exist_ok=True)
        for src, name in (
            (self.pki.ca_cert, "ca.crt"),
            (self.pki.ca_cert, "ca/ca.crt"),
            (cert, "tls.crt"),
            (key, "tls.key"),
        ):
            shutil.copyfile(src, self.certs / name)
        (self.certs / "tls.key").chmod(0o600)
        for sa in (OPERATOR, METRICS_SERVER):
            token = kube.mint_token(NAMESPACE, sa, seconds=TOKEN_SECONDS)
            path = self.kubeconfig(sa)
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # holds a token
            with os.fdopen(fd, "w") as f:
                f.write(cp.kubeconfig_yaml(self.api_server, self.pki.ca_cert, token, user=sa))

    def _env(self, sa: str) -> dict[str, str]:
        # The kubeconfig by path (never a token in the environment).
        base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        return base | {
            "KUBECONFIG": str(self.kubeconfig(sa)),
            "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
            "WATCH_NAMESPACE": "",  # every namespace
        }

    def start_operator(self, log: Path) -> ProcRef:
        p = self.ports
        argv = [
            str(self.bins.operator),
            f"--metrics-bind-address=127.0.0.1:{p['keda-operator-metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{p['keda-operator-health']}",
            f"--metrics-service-bind-address=127.0.0.1:{p['keda-grpc']}",
            f"--cert-dir={self.certs}",
            # Scalers' extra TLS trust: the stack's CA (KEDA reads every file there as PEM).
            f"--ca-dir={self.certs / 'ca'}",
            "--enable-cert-rotation=false",  # the stack issues its certificate
            "--leader-elect=false",
            "--zap-log-level=info",
            "--zap-encoder=console",
        ]
        env = self._env(OPERATOR) | {"KEDA_RESTRICT_SECRET_ACCESS": "true"}
        return spawn(OPERATOR, argv, log, env=env, cwd=self.stack_dir)

    def start_metrics_server(self, log: Path) -> ProcRef:
        p, kc = self.ports, self.kubeconfig(METRICS_SERVER)
        argv = [
            str(self.bins.metrics_server),
            "--bind-address=127.0.0.1",
            f"--secure-port={p['keda-metrics-apiserver']}",
            f"--tls-cert-file={self.certs / 'tls.crt'}",
            f"--tls-private-key-file={self.certs / 'tls.key'}",
            f"--cert-dir={self.certs}",  # its gRPC client's mTLS material
            f"--client-ca-file={self.pki.ca_cert}",
            f"--lister-kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--metrics-service-address=127.0.0.1:{p['keda-grpc']}",
            # Its own /metrics: KEDA binds it on every interface (no address flag).
            f"--port={p['keda-metrics-apiserver-metrics']}",
            "--zap-log-level=info",
            "--zap-encoder=console",
        ]
        return spawn(METRICS_SERVER, argv, log, env=self._env(METRICS_SERVER), cwd=self.stack_dir)

    def operator_healthy(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.ports['keda-operator-health']}/readyz")

    def metrics_server_ready(self) -> bool:
        """Its own /readyz, then the APIService Available through the API server."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        url = f"https://127.0.0.1:{self.ports['keda-metrics-apiserver']}/readyz"
        return _http_ok(url, ctx)

    def components(
        self, log_dir: Path
    ) -> list[tuple[str, Callable[[], ProcRef], Callable[[], bool]]]:
        return [
            (OPERATOR, lambda: self.start_operator(log_dir / f"{OPERATOR}.log"), self.operator_healthy),
            (
                METRICS_SERVER,
                lambda: self.start_metrics_server(log_dir / f"{METRICS_SERVER}.log"),
                self.metrics_server_ready,
            ),
        ]  # fmt: skip


def apiservice_available(kube: Kube) -> bool:
    got = kube.get("apiregistration.k8s.io/v1", "APIService", APISERVICE)
    conds = (got or {}).get("status", {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conds)


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
            return bool(r.status == 200)
    except OSError:
        return False
