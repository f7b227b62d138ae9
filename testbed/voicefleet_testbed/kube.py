"""Kubernetes clients for the testbed: the admin, and restricted identities for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

if TYPE_CHECKING:
    from .stack import Stack

JSON = dict[str, Any]


def api_client(server: str, ca_file: str, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = server
    cfg.ssl_ca_cert = ca_file
    cfg.api_key = {"authorization": f"Bearer {token}"}
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


@dataclass
class Kube:
    api: client.ApiClient

    @classmethod
    def admin(cls, stack: Stack) -> Kube:
        return cls(api_client(stack.api_server, str(stack.pki.ca_cert), stack.pki.admin_token()))

    @classmethod
    def with_token(cls, stack: Stack, token: str) -> Kube:
        return cls(api_client(stack.api_server, str(stack.pki.ca_cert), token))

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @cached_property
    def dynamic(self) -> Any:
        return DynamicClient(self.api)  # type: ignore[no-untyped-call]

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def create(self, obj: JSON, namespace: str | None = None) -> JSON:
        """Create any object from a plain dict (typed models are not needed in tests)."""
        res = self._resource(obj["apiVersion"], obj["kind"])
        ns = namespace or obj.get("metadata", {}).get("namespace")
        out: JSON = res.create(body=obj, namespace=ns if res.namespaced else None).to_dict()
        return out

    def apply(
        self,
        obj: JSON,
        namespace: str | None = None,
        manager: str = "tests",
        dry_run: bool = False,
    ) -> JSON:
        """Server-side apply (`dry_run`: validated and admitted by the API server, not
        stored)."""
        res = self._resource(obj["apiVersion"], obj["kind"])
        ns = namespace or obj.get("metadata", {}).get("namespace")
        extra = {"dry_run": "All"} if dry_run else {}
        out: JSON = res.server_side_apply(
            body=obj,
            namespace=ns if res.namespaced else None,
            field_manager=manager,
            force_conflicts=True,
            **extra,
        ).to_dict()
        return out

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> JSON | None:
        res = self._resource(api_version, kind)
        try:
            out: JSON = res.get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None
        return out

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[JSON]:
        res = self._resource(api_version, kind)
        items: list[JSON] = res.get(namespace=namespace, label_selector=label_selector).to_dict()[
            "items"
        ]
        return items

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        grace_seconds: int | None = None,
        propagation: str = "Background",
    ) -> None:
        res = self._resource(api_version, kind)
        body: JSON = {"propagationPolicy": propagation}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        with contextlib.suppress(NotFoundError):
            res.delete(name=name, namespace=namespace, body=body)

    def ready_pod(self, namespace: str, selector: str) -> JSON | None:
        """A pod matching `selector` that is Ready and not being deleted, if any."""
        for p in self.list("v1", "Pod", namespace, selector):
            conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions") or []}
            if conds.get("Ready") == "True" and not p["metadata"].get("deletionTimestamp"):
                return p
        return None

    def crds_established(self, names: Sequence[str]) -> bool:
        """Every named CustomResourceDefinition is Established (its API is served)."""
        for name in names:
            got = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
            conds = (got or {}).get("status", {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                return False
        return True

    def node_ready(self, name: str) -> bool:
        node = self.core.read_node(name)
        conditions = (node.status.conditions if node.status else None) or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def service_account_exists(self, namespace: str, name: str) -> bool:
        try:
            self.core.read_namespaced_service_account(name, namespace)
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def mint_token(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A bearer token for a ServiceAccount (created if missing), via TokenRequest."""
        if not self.service_account_exists(namespace, service_account):
            self.core.create_namespaced_service_account(
                namespace,
                client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=service_account)),
            )
        req = self.core.create_namespaced_service_account_token(
            service_account,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
            ),
        )
        assert req.status is not None
        return str(req.status.token)
