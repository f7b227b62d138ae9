"""What `make up` installs on its real node the way a user installs voicefleet on a cluster.

- The project's images (`make images`), imported into the node's containerd: nothing is
  pulled, and the pods' `imageID`s are the built images'.
- LiveKit and the Realtime stand-in named by Services, as a cluster names its LiveKit:
  `ws://livekit.livekit.svc:7880` and `http://openai-realtime.testbed.svc:7879/v1`, what
  examples/voiceagent.yaml names. Both servers run on the host, on the node's bridge
  address, so the Services are selector-less with an EndpointSlice there (a port change
  of theirs between two `make up`s moves the EndpointSlice, never the example).
- The operator from charts/voicefleet with helm, under the chart's own RBAC, with the
  chart's defaults but for the built images and the webhook Service: a NodePort on the
  bridge address, where the host's LiveKit (which cannot resolve a Service name) posts
  its webhooks, as a LiveKit outside a cluster would.

Every namespace enforces Pod Security `restricted` (the stack's admission defaults), the
operator's and the example's included.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .binaries import REPO_DIR, Binaries
from .images import MissingImages, built, chart_values
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


def chart_values_for(images: dict[str, Any]) -> dict[str, Any]:
    """The chart's values for `make up`: its defaults, the built images, and the webhook
    Service as a fixed NodePort."""
    return {
        **chart_values(images),
        "webhook": {"service": {"type": "NodePort", "nodePort": WEBHOOK_NODE_PORT}},
    }


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
    progress(f"  helm upgrade --install {RELEASE} charts/voicefleet -n {NAMESPACE} ...")
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=stack.dir) as values:
        json.dump(chart_values_for(images), values)
        values.flush()
        out = helm(
            stack,
            "upgrade", "--install", RELEASE, str(CHART),
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
