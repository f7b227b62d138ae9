"""The testbed's real node: kubelet, containerd, runc, a CNI bridge, kube-proxy and CoreDNS."""

from .config import NODE_NAME, PodNet
from .node import NodeBusy, RealNode
from .scheduling import HOLLOW_NODE_ANNOTATIONS, REAL_NODE_ANNOTATIONS

__all__ = [
    "HOLLOW_NODE_ANNOTATIONS",
    "NODE_NAME",
    "REAL_NODE_ANNOTATIONS",
    "NodeBusy",
    "PodNet",
    "RealNode",
]
