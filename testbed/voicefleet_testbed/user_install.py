"""What `make up` installs on its real node the way a user installs voicefleet on a cluster.

- The project's images (`make images`), imported into the node's containerd: nothing is
  pulled, and the pods' `imageID`s are the built images'.
- LiveKit and the Realtime stand-in named by Services, as a cluster names its LiveKit:
  `ws://livekit.livekit.svc:7880` and `http://openai-realtime.testbed.svc:7879/v1`, what
  examples/voiceagent.yaml names. Both servers run on the host, on the node's bridge
  address, so the Services are selector-less with an EndpointSlice there (a port change
  of theirs between two `make up`s moves the EndpointSlice, never the example).
- The operator with helm from the chart as a user gets it (`helm package` of
  charts/voicefleet, then the .tgz), under the chart's own RBAC, with the chart's defaults
  but for the built images, the webhook Service (a NodePort on the bridge address, where
  the host's LiveKit, which cannot resolve a Service name, posts its webhooks, as a LiveKit
  outside a cluster would) and the call page (on, minting tokens with the testbed's LiveKit
  key from a Secret, naming LiveKit as the host's browser reaches it). A browser reaches
  the page as on a cluster, through `kubectl port-forward` to 127.0.0.1: a page on the
  node's address would not be a secure context, where browsers give no microphone.

Every namespace enforces Pod Security `restricted` (the stack's admission defaults), the
operator's and the example's included.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .binaries import REPO_DIR, Binaries
from .images import MissingImages, built, chart_values
from .livekit_config import LIVEKIT_KEY
from .procs import Timeout, wait_for
from .realnode import config as node_config

if TYPE_CHECKING:
    from .kube import Kube
    from .stack import Stack

RELEASE: Final = "voicefleet"
NAMESPACE: Final = "voicefleet-system"
CHART: Final = REPO_DIR / "charts" / "voicefleet"
# (namespace, Service, port): the names examples/voiceagent.yaml uses.
LIVEKIT_SERVICE: Final = ("livekit", "livekit", 7880)
REALTIME_SERVICE: Final = ("testbed", "openai-realtime", 7879)
WEBHOOK_NODE_PORT: Final = 30790  # in the API server's default NodePort range
WEBHOOK_PATH: Final = "/livekit/webhook"
CALL_PAGE_SERVICE: Final = f"{RELEASE}-call"  # the chart's <fullname>-call
CALL_PAGE_LOCAL_PORT: Final = 8088  # what the chart's NOTES forward to
CALL_PAGE_SECRET: Final = "livekit-credentials"  # in NAMESPACE: the call page's LiveKit key
OPERATOR_READY_TIMEOUT: Final = 180.0  # the operator image starts in a few seconds when idle


def livekit_service_url() -> str:
    ns, name, port = LIVEKIT_SERVICE
    return f"ws://{name}.{ns}.svc:{port}"


def realtime_service_url() -> str:
    ns, name, port = REALTIME_SERVICE
    return f"http://{name}.{ns}.svc:{port}/v1"


def webhook_url(node_ip: str) -> str:
    """Where the host's LiveKit posts webhooks: the chart's webhook NodePort on the node."""
    return f"http://{node_ip}:{WEBHOOK_NODE_PORT}{WEBHOOK_PATH}"


def call_page_forward(port: int = CALL_PAGE_LOCAL_PORT) -> tuple[str, str]:
    """(the kubectl command, the URL) that open the chart's call page on this machine."""
    return (
        f"kubectl -n {NAMESPACE} port-forward svc/{CALL_PAGE_SERVICE} {port}:80",
        f"http://127.0.0.1:{port}/",
    )


@contextlib.contextmanager
def call_page(stack: Stack, port: int) -> Iterator[str]:
    """`kubectl port-forward` to the call page on 127.0.0.1:`port` while in the block;
    yields the page's URL once it answers."""
    argv = [str(Binaries.locate().kubectl), f"--kubeconfig={stack.kubeconfig}", "-n", NAMESPACE,
            "port-forward", f"svc/{CALL_PAGE_SERVICE}", f"{port}:80", "--address=127.0.0.1"]  # fmt: skip
    url = call_page_forward(port)[1]
    pf = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def answers() -> bool:
        if pf.poll() is not None:
            raise RuntimeError(
                f"kubectl port-forward exited: {pf.stderr.read() if pf.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(answers, 30, "the call page through kubectl port-forward")
        yield url
    finally:
        pf.terminate()
        pf.wait(5)


def chart_values_for(
    images: dict[str, Any], livekit_url: str, prometheus_url: str = ""
) -> dict[str, Any]:
    """The chart's values for `make up`: its defaults, the built images, the webhook
    Service as a fixed NodePort, and the call page on (`livekit_url`: LiveKit as the
    host's browser reaches it); `prometheus_url`: the stack's Prometheus, which mode keda's
    ScaledObjects name (KEDA, with `--keda`, runs on the host and reaches it there)."""
    return {
        **chart_values(images),
        **({"operator": {"prometheusUrl": prometheus_url}} if prometheus_url else {}),
        "webhook": {"service": {"type": "NodePort", "nodePort": WEBHOOK_NODE_PORT}},
        "callPage": {
            "enabled": True,
            "livekitUrl": livekit_url,
            "credentialsSecret": CALL_PAGE_SECRET,
        },
    }


def credentials_secret(api_key: str, api_secret: str) -> dict[str, Any]:
    """The call page's LiveKit key pair, as a user creates it before installing."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CALL_PAGE_SECRET, "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {"apiKey": api_key, "apiSecret": api_secret},
    }


def package_chart(stack: Stack) -> Path:
    """`helm package charts/voicefleet` into the stack's directory: the .tgz a user
    installs (what .helmignore keeps, the linked files resolved)."""
    out_dir = stack.dir / "chart"
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob("*.tgz"):
        old.unlink()
    out = helm(stack, "package", str(CHART), "--destination", str(out_dir))
    if out.returncode != 0:
        raise RuntimeError(f"helm package failed:\n{out.stdout}{out.stderr}")
    (tgz,) = out_dir.glob("*.tgz")
    return tgz


def service_objects(host: str, livekit_port: int, realtime_port: int) -> list[dict[str, Any]]:
    """The namespaces and Services that name the host's LiveKit and stand-in."""
    out: list[dict[str, Any]] = []
    for (ns, name, port), target in (
        (LIVEKIT_SERVICE, livekit_port),
        (REALTIME_SERVICE, realtime_port),
    ):
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        out += node_config.host_service(ns, name, port, host, target)
    return out


def helm(stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [str(Binaries.locate().helm), "--kubeconfig", str(stack.kubeconfig), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def operator_pod(kube: Kube) -> dict[str, Any] | None:
    """The chart's operator pod, when one is Ready."""
    sel = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=voicefleet-operator"
    return kube.ready_pod(NAMESPACE, sel)


def install(stack: Stack, kube: Kube, progress: Callable[[str], None]) -> None:
    """Images into the node, the Services, and `helm upgrade --install` of the chart (a
    second `make up` upgrades it to rebuilt images); waits for the operator pod Ready."""
    node = stack.real_node
    if node is None:
        raise RuntimeError("the operator from the chart needs the real node")
    try:
        images = built()
    except MissingImages as e:
        raise RuntimeError(str(e)) from None
    for image in images.values():
        if not node.has_image(image.ref):
            progress(f"  importing {image.ref} into the real node's containerd ...")
            node.import_image(Path(image.archive))
    for obj in service_objects(
        node.net.gateway, stack.state.ports["livekit"], stack.state.ports["realtime"]
    ):
        kube.apply(obj, manager="testbed")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
               manager="testbed")  # fmt: skip
    kube.apply(credentials_secret(LIVEKIT_KEY, stack.livekit_secret), manager="testbed")
    t0 = time.monotonic()
    tgz = package_chart(stack)
    progress(f"  helm package charts/voicefleet -> {tgz.relative_to(stack.dir.parent)}")
    progress(f"  helm upgrade --install {RELEASE} {tgz.name} -n {NAMESPACE} ...")
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=stack.dir) as values:
        json.dump(chart_values_for(images, stack.livekit_url, stack.prometheus_url), values)
        values.flush()
        out = helm(
            stack,
            "upgrade", "--install", RELEASE, str(tgz),
            "--namespace", NAMESPACE, "--create-namespace",
            # A stack installed by a chart that shipped its CRDs in crds/ (never upgraded,
            # owned by no release): the templated CRDs take them over.
            "--take-ownership",
            "--values", values.name,
        )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"helm upgrade --install failed:\n{out.stdout}{out.stderr}")
    try:
        pod = wait_for(lambda: operator_pod(kube), OPERATOR_READY_TIMEOUT, "the operator pod")
    except Timeout:
        raise RuntimeError(
            f"the chart's operator pod is not Ready after {OPERATOR_READY_TIMEOUT:.0f}s: "
            f"kubectl -n {NAMESPACE} describe pods; kubectl -n {NAMESPACE} logs deploy/{RELEASE}"
        ) from None
    progress(
        f"  operator pod {pod['metadata']['name']} Ready on {pod['spec']['nodeName']} "
        f"in {time.monotonic() - t0:.1f}s"
    )


def status_row(kube: Kube) -> tuple[str, bool, str]:
    """(name, healthy, detail) for `make status`."""
    try:
        pod = operator_pod(kube)
    except Exception as e:  # the API server being down is reported by its own row
        return (f"{RELEASE} (chart)", False, f"cannot ask the API server: {type(e).__name__}")
    if pod is None:
        return (
            f"{RELEASE} (chart)",
            False,
            f"no Ready operator pod: kubectl -n {NAMESPACE} describe pods",
        )
    return (
        f"{RELEASE} (chart)",
        True,
        f"pod {NAMESPACE}/{pod['metadata']['name']} on {pod['spec']['nodeName']}, "
        f"logs: kubectl -n {NAMESPACE} logs deploy/{RELEASE}",
    )
