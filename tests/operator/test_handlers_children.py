"""Which child kinds the operator watches for drift (and so needs RBAC to list)."""

from __future__ import annotations

from voicefleet_operator.handlers import CHILD_RESOURCES, NETWORK_POLICIES, child_resources
from voicefleet_operator.settings import Settings


def test_network_policies_are_watched_only_with_worker_ingress() -> None:
    assert child_resources(Settings()) == CHILD_RESOURCES
    assert NETWORK_POLICIES not in child_resources(Settings())
    with_flag = Settings(worker_ingress=({"ports": [{"port": "metrics"}]},))
    assert child_resources(with_flag) == (*CHILD_RESOURCES, NETWORK_POLICIES)
