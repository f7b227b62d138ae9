"""Command lines and readiness checks for etcd, kube-apiserver and kube-controller-manager.

Flags follow controller-runtime's envtest, plus what the testbed needs: RBAC, static
tokens, service-account token signing (for TokenRequest), and no endpoint reconciler
(Endpoints may not hold loopback addresses, and every address here is loopback).
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from .binaries import Binaries
from .pki import FRONT_PROXY_CLIENT, Pki

SERVICE_CIDR = "10.0.0.0/24"

# Controllers the project needs: Deployments and ReplicaSets, garbage collection of owned
# objects, namespace deletion, HPA (mode: hpa), PDB status, default ServiceAccounts, the
# root CA ConfigMap (for service-account token volumes) and ResourceQuota usage.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "horizontal-pod-autoscaler-controller",
    "disruption-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "job-controller",
    "clusterrole-aggregation-controller",  # fills view/edit/admin
    # ResourceQuota usage: without it quota admission refuses every pod in a namespace
    # with a quota ("status unknown"), where a cluster says "exceeded quota".
    "resourcequota-controller",
    # The real node: NotReady when its kubelet stops, taint-based eviction, Service
    # endpoints for kube-proxy and CoreDNS, pods of deleted nodes cleaned up.
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "endpointslice-controller",
    "pod-garbage-collector-controller",
)


def etcd_argv(b: Binaries, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(b.etcd),
        "--name=testbed",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=testbed={peer}",
        "--unsafe-no-fsync",  # a throwaway cluster: speed over durability
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]


def apiserver_argv(
    b: Binaries,
    pki: Pki,
    etcd_port: int,
    port: int,
    cert_dir: Path,
    admission_config: Path,
    kubelet_client: tuple[Path, Path],
) -> list[str]:
    return [
        str(b.kube_apiserver),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Kubelets act as their node (system:node:<name>) and only for its own pods.
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction",
        f"--admission-control-config-file={admission_config}",
        # The kubelet API (logs, exec, port-forward): a client certificate, and the
        # kubelet's serving certificate checked against the stack's CA.
        f"--kubelet-client-certificate={kubelet_client[0]}",
        f"--kubelet-client-key={kubelet_client[1]}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--token-auth-file={pki.tokens_csv}",
        *aggregation_flags(pki),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--api-audiences=https://kubernetes.default.svc.cluster.local",
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",  # one tenant; APF would only throttle benchmarks
        "--max-requests-inflight=2000",
        "--max-mutating-requests-inflight=1000",
        "--profiling=false",
        "--v=1",
    ]


def aggregation_flags(pki: Pki) -> list[str]:
    """The aggregation layer (APIServices served by extension API servers such as KEDA's
    metrics server), as kubeadm configures it: the API server proxies as
    `front-proxy-client` with a certificate of the front-proxy CA and passes the user in
    X-Remote-* headers, which extension servers trust by that CA (the API server publishes
    it in kube-system/extension-apiserver-authentication). Costs nothing when unused.
    No --enable-aggregator-routing: it routes to EndpointSlice addresses, which may not be
    loopback, and every server here is on 127.0.0.1; an APIService's Service is an
    ExternalName instead (keda.py), which the API server's cluster routing dials as named."""
    cert, key = pki.front_proxy_client
    return [
        f"--requestheader-client-ca-file={pki.front_proxy_ca}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={cert}",
        f"--proxy-client-key-file={key}",
    ]


def controller_manager_argv(b: Binaries, pki: Pki, kubeconfig: Path, port: int) -> list[str]:
    return [
        str(b.kube_controller_manager),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--v=1",
    ]


def scheduler_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        # Benchmarks create thousands of pods at once (the node agent used to bind them).
        "clientConnection": {"kubeconfig": str(kubeconfig), "qps": 500, "burst": 1000},
        "leaderElection": {"leaderElect": False},
    }


def scheduler_argv(b: Binaries, config: Path, kubeconfig: Path, port: int) -> list[str]:
    return [
        str(b.kube_scheduler),
        f"--config={config}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--v=1",
    ]


def scheduler_healthy(port: int) -> bool:
    status, _ = _get(f"https://127.0.0.1:{port}/healthz", verify=False)
    return status == 200


def kubeconfig_yaml(server: str, ca_file: Path, token: str, user: str = "admin") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {"server": server, "certificate-authority": str(ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
            "current-context": "testbed",
        },
        indent=2,
    )


def _get(
    url: str, token: str | None = None, ca_file: Path | None = None, verify: bool = True
) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(
            req, timeout=3, context=ctx if url.startswith("https") else None
        ) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def etcd_healthy(port: int) -> bool:
    status, body = _get(f"http://127.0.0.1:{port}/health")
    return status == 200 and '"true"' in body


def apiserver_ready(server: str, pki: Pki) -> bool:
    status, _ = _get(f"{server}/readyz", pki.admin_token(), pki.ca_cert)
    return status == 200


def controller_manager_healthy(port: int) -> bool:
    status, _ = _get(f"https://127.0.0.1:{port}/healthz", verify=False)
    return status == 200
