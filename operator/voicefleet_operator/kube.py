"""A small dict-in, dict-out Kubernetes client over the official client's transport.

The generated typed API turns every object into a model class; the operator renders and
compares plain dicts, so it speaks JSON to the API server through `ApiClient` (which
brings kubeconfig/in-cluster auth and TLS) and gets dicts back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kubernetes import client, config

from voicefleet_contract import API_VERSION, KIND, PLURAL

APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
TIMEOUT: Final = 30.0

PLURALS: Final = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
    (API_VERSION, KIND): PLURAL,
}


class KubeError(Exception):
    """A non-2xx answer from the API server (or no answer: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying as is: the server or the network, not our request."""
        return self.status in (0, 409, 429) or self.status >= 500


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    tail = f"/{name}" if name else ""
    return f"{base}{ns}/{PLURALS[(api_version, kind)]}{tail}"


def path_of(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])


@dataclass(frozen=True)
class Applied:
    """The object after a server-side apply, and whether the apply created it (HTTP 201).

    The answer is the only race-free way to tell a create from an update: an object read
    before the apply may be deleted (by hand, by a namespace going away) before the apply
    lands, and the apply then creates it.
    """

    obj: dict[str, Any]
    created: bool


class KubeApi(Protocol):
    """What the reconciler needs; tests provide a fake."""

    def get(self, path: str) -> dict[str, Any] | None: ...

    def list(self, path: str, label_selector: str) -> list[dict[str, Any]]: ...

    def apply(self, obj: Mapping[str, Any], field_manager: str) -> Applied: ...

    def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]: ...

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, path: str, grace_seconds: int | None = None) -> None: ...


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client

    @classmethod
    def connect(cls, kubeconfig: str | None = None, pool_size: int = 32) -> Kube:
        """In-cluster credentials in a pod; else the kubeconfig (flag, $KUBECONFIG, default)."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            cfg.connection_pool_maxsize = pool_size
            return cls(client.ApiClient(cfg))
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
        cfg.connection_pool_maxsize = pool_size  # one pooled connection per API thread
        return cls(client.ApiClient(cfg))

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        return self.exchange(method, path, query=query, body=body, content_type=content_type)[1]

    def exchange(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One request: (HTTP status, JSON body); a non-2xx answer raises `KubeError`."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self.api.call_api(*params, _request_timeout=TIMEOUT)
            data = resp.read()  # type: ignore[no-untyped-call]
            status = resp.status
        except client.ApiException as e:  # raised by the transport for some statuses
            data, status = (e.body or "").encode(), int(e.status or 0)
        except Exception as e:  # connection refused, timeouts, TLS: retry later
            raise KubeError(0, type(e).__name__, str(e)) from e
        text = data.decode("utf-8", "replace") if data else ""
        if not 200 <= status < 300:
            message, reason = text, ""
            try:
                parsed = json.loads(text)
                message, reason = parsed.get("message", text), parsed.get("reason", "")
            except ValueError:
                pass
            raise KubeError(status, reason, message)
        return status, (json.loads(text) if text else {})

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        items = self.request("GET", path, query={"labelSelector": label_selector})["items"]
        return list(items)

    def apply(self, obj: Mapping[str, Any], field_manager: str) -> Applied:
        # force: every field in an apply body is one the operator owns by design; a human
        # editing them (drift) is exactly what must be reverted.
        status, result = self.exchange(
            "PATCH",
            path_of(obj),
            query={"fieldManager": field_manager, "force": "true"},
            body=dict(obj),
            content_type=APPLY_PATCH,
        )
        return Applied(result, created=status == 201)

    def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH", f"{path}/status", body={"status": dict(status)}, content_type=MERGE_PATCH
        )

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=dict(body), content_type=MERGE_PATCH)

    def delete(self, path: str, grace_seconds: int | None = None) -> None:
        """Delete (with `grace_seconds` for a pod's termination); an object already gone
        is fine."""
        body = None if grace_seconds is None else {"gracePeriodSeconds": grace_seconds}
        try:
            self.request("DELETE", path, body=body)
        except KubeError as e:
            if e.status != 404:
                raise
