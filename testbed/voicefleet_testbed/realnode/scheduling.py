"""Which node a pod lands on: the real node (kubelet + containerd) or the node agent's
hollow node. The hollow node is tainted and labelled; the API server's PodNodeSelector
and PodTolerationRestriction admission plugins give every pod a cluster-wide default
node selector and tolerations, and a namespace's annotations override them.

`make up`'s stack sends every pod to the real node by default, as a user's cluster would run
them. Test stacks default to the hollow node (`DEFAULT_NODE`): most tests run many workers
as processes there, and a namespace opts in to the real node with `REAL_NODE_ANNOTATIONS`
(the `real_namespace` fixture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from .config import HOLLOW_TAINT_KEY, NODE_ROLE_LABEL

NodeKind = Literal["real", "hollow"]
DEFAULT_NODE: NodeKind = "hollow"
NODE_SELECTOR_ANNOTATION = "scheduler.alpha.kubernetes.io/node-selector"
TOLERATIONS_ANNOTATION = "scheduler.alpha.kubernetes.io/defaultTolerations"
HOLLOW_TAINT: dict[str, Any] = {"key": HOLLOW_TAINT_KEY, "value": "true", "effect": "NoSchedule"}
HOLLOW_TOLERATION: dict[str, Any] = {
    "key": HOLLOW_TAINT_KEY,
    "operator": "Exists",
    "effect": "NoSchedule",
}


def node_selector(kind: NodeKind) -> str:
    return f"{NODE_ROLE_LABEL}={kind}"


def namespace_annotations(kind: NodeKind) -> dict[str, str]:
    """Annotations that send a namespace's pods to one kind of node."""
    tolerations = [HOLLOW_TOLERATION] if kind == "hollow" else []
    return {
        NODE_SELECTOR_ANNOTATION: node_selector(kind),
        TOLERATIONS_ANNOTATION: json.dumps(tolerations),
    }


REAL_NODE_ANNOTATIONS = namespace_annotations("real")
HOLLOW_NODE_ANNOTATIONS = namespace_annotations("hollow")


def admission_files(
    directory: Path, default: NodeKind = DEFAULT_NODE, enforce: str = "privileged"
) -> dict[Path, str]:
    """The API server's --admission-control-config-file and the plugin configs it names.

    `enforce`: the Pod Security level of every namespace that names none (`make up`'s
    stack: "restricted", as a hardened cluster; test stacks leave it to each namespace)."""
    selector = directory / "podnodeselector.yaml"
    tolerations = directory / "podtolerationrestriction.yaml"
    pod_security = directory / "podsecurity.yaml"
    main = directory / "admission.yaml"
    return {
        pod_security: json.dumps(
            {
                "apiVersion": "pod-security.admission.config.k8s.io/v1",
                "kind": "PodSecurityConfiguration",
                "defaults": {"enforce": enforce, "enforce-version": "latest"},
                "exemptions": {"namespaces": ["kube-system"]},
            }
        ),
        selector: json.dumps(
            {"podNodeSelectorPluginConfig": {"clusterDefaultNodeSelector": node_selector(default)}}
        ),
        tolerations: json.dumps(
            {
                "apiVersion": "podtolerationrestriction.admission.k8s.io/v1alpha1",
                "kind": "Configuration",
                "default": [HOLLOW_TOLERATION] if default == "hollow" else [],
            }
        ),
        main: json.dumps(
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "AdmissionConfiguration",
                "plugins": [
                    {"name": "PodNodeSelector", "path": str(selector)},
                    {"name": "PodTolerationRestriction", "path": str(tolerations)},
                    {"name": "PodSecurity", "path": str(pod_security)},
                ],
            }
        ),
    }
