"""Kubernetes clients for the testbed: the admin, and restricted identities for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes import client

if TYPE_CHECKING:
    from .stack import Stack


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

    def node_ready(self, name: str) -> bool:
        node = self.core.read_node(name)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

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
                namespace, {"metadata": {"name": service_account}}
            )
        req = self.core.create_namespaced_service_account_token(
            service_account,
            namespace,
            {"spec": {"expirationSeconds": seconds}},
        )
        return str(req.status.token)

    def apply_objects(self, objects: list[dict[str, Any]]) -> None:
        """Create each object (any kind) with the dynamic create-from-dict helper."""
        from kubernetes import utils

        for obj in objects:
            utils.create_from_dict(self.api, obj)
