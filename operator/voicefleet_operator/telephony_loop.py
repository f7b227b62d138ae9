"""The telephony sync: keeps each VoiceAgent's spec.telephony in step with LiveKit's SIP
service, and reports in status.telephony (which the status writer turns into the
TelephonyReady condition).

When it runs: the VoiceAgent's create, spec changes and resume; a timer every
--retry-seconds that syncs again when the last sync failed or is older than
--resync-seconds (someone deleted the rule by hand: it comes back); and the VoiceAgent's
deletion, which kopf's finalizer holds until the objects are off LiveKit (they are not
Kubernetes objects: nothing else would delete them). The decisions are telephony.py's;
LiveKit's API is sip.py's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import kopf
from livekit import api as lkapi
from prometheus_client import Counter, Gauge

from voicefleet_contract import metrics as m
from voicefleet_contract.livekit_url import http_url
from voicefleet_contract.metric_build import build_metric
from voicefleet_contract.telephony import owner_key

from . import telephony as tel
from .credentials import SecretData, credentials_of
from .events import poster
from .fleet import va_path
from .kube import Kube, KubeError, path
from .metrics import OperatorMetrics
from .settings import Settings
from .sip import LiveKitSip, SipApi
from .spec import SipAuth, SpecError, VoiceAgentSpec, parse_spec

log = logging.getLogger("voicefleet.telephony")
DELETE_RETRIES: Final = 30  # x 10 s: then the VoiceAgent goes and LiveKit keeps the objects


class SyncProblem(Exception):
    """A sync that cannot go on: the state and message for status.telephony."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.message = message


@dataclass
class _Key:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_sync: float = 0.0
    ok: bool = False
    state: str = ""
    # LiveKit as last reached: a namespace being deleted may lose its Secrets before the
    # VoiceAgent, whose trunks must still go.
    target: tuple[str, str, str] | None = field(default=None, repr=False)


def _decode(secret: Mapping[str, Any] | None, key: str) -> str | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    try:
        return base64.b64decode(raw).decode().strip() if raw else None
    except ValueError:
        return None


class TelephonyMetrics:
    def __init__(self, metrics: OperatorMetrics) -> None:
        self.syncs: Counter = build_metric(m.TELEPHONY_SYNCS, metrics.registry)
        self.objects: Gauge = build_metric(m.TELEPHONY_OBJECTS, metrics.registry)

    def observe(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        state = str(status.get("state") or "")
        self.syncs.labels(namespace, name, state.lower() or "skipped").inc()
        if state in ("Synced", "Removed"):
            for kind, key in (("inbound", "inboundTrunkId"), ("outbound", "outboundTrunkId"),
                              ("rule", "dispatchRuleId")):  # fmt: skip
                self.objects.labels(namespace, name, kind).set(1 if status.get(key) else 0)

    def forget(self, namespace: str, name: str) -> None:
        for kind in ("inbound", "outbound", "rule"):
            with contextlib.suppress(KeyError):
                self.objects.remove(namespace, name, kind)


class TelephonySync:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        refresh_status: Callable[[str, str], None],
        metrics: TelephonyMetrics,
        sip_factory: Callable[[str, str, str], SipApi] = LiveKitSip,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.refresh_status = refresh_status
        self.metrics = metrics
        self.sip_factory = sip_factory
        self.clock = clock
        self._keys: dict[tuple[str, str], _Key] = {}

    def due(self, namespace: str, name: str) -> bool:
        """For the timer: a failed sync is retried; a good one is repeated each resync."""
        k = self._keys.get((namespace, name))
        if k is None or not k.ok:
            return True
        return self.clock() - k.last_sync >= self.settings.resync_seconds

    async def _secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.kube.get, path("v1", "Secret", namespace, name))

    async def _auth(
        self, namespace: str, auth: SipAuth | None, where: str
    ) -> tuple[str, str] | None:
        if auth is None:
            return None
        secret = await self._secret(namespace, auth.secret)
        if secret is None:
            raise SyncProblem("Error", f"{where}: Secret {auth.secret} not found")
        user, password = _decode(secret, auth.usernameKey), _decode(secret, auth.passwordKey)
        if not user or not password:
            raise SyncProblem(
                "Error",
                f"{where}: Secret {auth.secret} lacks key {auth.usernameKey} or {auth.passwordKey}",
            )
        return user, password

    async def _target(self, spec: VoiceAgentSpec, k: _Key) -> tuple[str, str, str]:
        secret = await self._secret(spec.namespace, spec.livekit.credentialsSecret)
        creds = credentials_of(SecretData((secret or {}).get("data") or {}), spec)
        if creds is not None:
            k.target = (http_url(spec.livekit.url), *creds)
        if k.target is None:
            raise SyncProblem(
                "Error", f"LiveKit credentials: Secret {spec.livekit.credentialsSecret} unreadable"
            )
        return k.target

    async def sync(self, body: Mapping[str, Any], *, deleting: bool = False) -> dict[str, Any]:
        """One sync of a VoiceAgent (as kopf sees it): its telephony onto LiveKit, or its
        objects off LiveKit (`deleting`, or spec.telephony gone). Returns status.telephony."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        k = self._keys.setdefault((namespace, name), _Key())
        async with k.lock:
            try:
                spec = parse_spec(name, namespace, dict(body.get("spec") or {}))
            except SpecError:
                return {}  # the reconciler reports an invalid spec
            want_t = None if deleting else spec.telephony
            owner = owner_key(namespace, name)
            sip: SipApi | None = None
            try:
                creds = tel.Credentials()
                if want_t is not None:
                    creds = tel.Credentials(
                        await self._auth(
                            namespace, want_t.inbound.auth, "spec.telephony.inbound.authSecret"
                        ),
                        await self._auth(
                            namespace,
                            want_t.outbound.auth if want_t.outbound else None,
                            "spec.telephony.outbound.authSecret",
                        ),
                    )
                sip = self.sip_factory(*await self._target(spec, k))
                want = (
                    None if want_t is None else tel.desired(owner, spec.agent_name, want_t, creds)
                )
                plan = tel.plan(want, owner, await sip.list())
                if plan.conflict:
                    raise SyncProblem("Conflict", plan.conflict)
                ids = await sip.apply(plan)
                if plan.steps:
                    log.info("telephony %s: %s", owner, ", ".join(s.describe() for s in plan.steps))
                status = _synced(want, ids, meta.get("generation"))
            except SyncProblem as e:
                status = {"state": e.state, "message": e.message}
            except lkapi.TwirpError as e:  # LiveKit's own words: ids and numbers, no secrets
                status = {"state": "Error", "message": f"LiveKit: {e.code}: {e.message}"[:1024]}
            except (aiohttp.ClientError, TimeoutError) as e:
                status = {"state": "Error", "message": f"LiveKit unreachable: {type(e).__name__}"}
            except KubeError as e:
                status = {"state": "Error", "message": f"API server: {e.status} {e.reason}"}
            finally:
                if sip is not None:
                    await sip.close()
            k.last_sync, k.ok = self.clock(), status.get("state") in ("Synced", "Removed")
            if status:
                self.metrics.observe(namespace, name, status)
            if not deleting:
                await self._report(body, k, status)
            return status

    async def _report(self, body: Mapping[str, Any], k: _Key, status: dict[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        old = (body.get("status") or {}).get("telephony") or {}
        new = None if status.get("state") == "Removed" else status
        if old != (new or {}):
            # Every key named, so a merge patch drops ids that no longer stand.
            keys = {"state", "message", "inboundTrunkId", "outboundTrunkId", "dispatchRuleId",
                    "observedGeneration"}  # fmt: skip
            patch = None if new is None else {key: new.get(key) for key in keys}
            await asyncio.to_thread(
                self.kube.patch_status, va_path(namespace, name), {"telephony": patch}
            )
            self.refresh_status(namespace, name)
        if status.get("state") != k.state:
            k.state = str(status.get("state"))
            kind = "Normal" if k.ok else "Warning"
            poster(body)(kind, f"Telephony{k.state}", str(status.get("message") or "")[:1024])

    def forget(self, namespace: str, name: str) -> None:
        self._keys.pop((namespace, name), None)
        self.metrics.forget(namespace, name)


def _synced(want: tel.Desired | None, ids: dict[tel.Kind, str], generation: Any) -> dict[str, Any]:
    if want is None:
        return {"state": "Removed", "message": "no telephony on LiveKit"}
    numbers = ", ".join(want.inbound.numbers)
    message = (
        f"calls to {numbers} reach agent {want.rule.agent_name!r} "
        f"(trunk {ids.get('inbound', '')}, rule {ids.get('rule', '')})"
    )
    out: dict[str, Any] = {
        "state": "Synced",
        "message": message,
        "inboundTrunkId": ids.get("inbound"),
        "dispatchRuleId": ids.get("rule"),
        "observedGeneration": generation,
    }
    if "outbound" in ids:
        out["outboundTrunkId"] = ids["outbound"]
    return out


def wants_sync(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """VoiceAgents the sync concerns: with telephony, or with some left on LiveKit."""
    return bool(spec.get("telephony")) or bool(status.get("telephony"))


async def remove(sync: TelephonySync, body: Mapping[str, Any], namespace: str, name: str) -> None:
    """A VoiceAgent with spec.telephony is being deleted: its trunks and rule leave LiveKit
    first (kopf retries the handler while LiveKit still has them)."""
    status = await sync.sync(body, deleting=True)
    if status.get("state") not in ("Removed", None):
        raise kopf.TemporaryError(
            f"telephony not removed from LiveKit yet: {status.get('message')}", delay=10
        )
    sync.forget(namespace, name)
