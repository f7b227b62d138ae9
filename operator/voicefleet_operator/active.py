"""The active replica (HA) says so on its own pod, so LiveKit's webhooks reach it alone.

With kopf peering one replica acts and the others stand by; a standby runs no failover
daemons, knows no LiveKit keys and cannot act on a webhook. The chart's webhook Service
therefore selects `voicefleet.dev/active: "true"` as well, and this sets that label on the
operator's own pod: "true" once a failover daemon runs (kopf runs daemons only while the
replica is active), "false" when daemons stop because kopf paused this replica for a peer.
A replica that dies leaves the Service with its pod. The patch is retried until it lands:
a replica that acts but is not labelled would leave webhooks unanswered.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from voicefleet_contract import LABEL_OPERATOR_ACTIVE

from .daemons import paused_for_a_peer
from .kube import KubeApi, path

log = logging.getLogger(__name__)


def label_patch(active: bool) -> dict[str, object]:
    """The merge patch of the operator's pod for this state. Pure."""
    return {"metadata": {"labels": {LABEL_OPERATOR_ACTIVE: "true" if active else "false"}}}


class ActiveLabel:
    """Keeps the label on the pod `namespace`/`pod` in step with this replica's state."""

    def __init__(self, kube: KubeApi, namespace: str, pod: str, retry_seconds: float = 2.0) -> None:
        self.kube = kube
        self.path = path("v1", "Pod", namespace, pod)
        self.retry_seconds = retry_seconds
        self._want: bool | None = None
        self._have: bool | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def standing_by(self) -> bool:
        """Not acting (yet, or any more): no failover daemon runs here since start or pause."""
        return self._want is not True

    def daemon_started(self) -> None:
        self._set(True)

    def daemon_stopped(self, reason: kopf.DaemonStoppingReason | None) -> None:
        if paused_for_a_peer(reason):
            self._set(False)

    def _set(self, active: bool) -> None:
        self._want = active
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._converge(), name="operator active label")

    async def _converge(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            while self._want is not None and self._want != self._have:
                want = self._want
                try:
                    await asyncio.to_thread(self.kube.merge_patch, self.path, label_patch(want))
                    self._have = want
                    log.info("this replica is %s", "active" if want else "standing by")
                except Exception as e:  # the API may be away; webhooks wait for the label
                    log.warning("cannot label %s %s: %s; retrying", self.path, want, e)
                    await asyncio.sleep(self.retry_seconds)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class NoActiveLabel:
    """Standalone (no peering): the one replica takes every webhook; nothing to label."""

    standing_by = False

    def daemon_started(self) -> None:
        pass

    def daemon_stopped(self, reason: kopf.DaemonStoppingReason | None) -> None:
        pass

    async def close(self) -> None:
        pass
