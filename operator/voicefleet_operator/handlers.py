"""Thin kopf handlers: every trigger ends in `Reconciler.reconcile(namespace, name)`.

Triggers: the VoiceAgent's create/update/resume (kopf retries these on transient
errors), a timer per VoiceAgent (the backstop: Secrets that appear later, anything a
watch missed), and events of the owned Deployments, ConfigMaps, Services and PDBs
(deleted or edited by hand -> repaired within a second, status follows the rollout).

Reconciles of one VoiceAgent never overlap: requests that arrive while one runs are
folded into a single follow-up run, so a burst of Deployment events during a rollout
costs two reconciles, not twenty.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from voicefleet_contract import (
    APP_NAME,
    GROUP,
    KIND,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    PLURAL,
    VERSION,
)

from . import reconcile as rc
from .autoscale_loop import IDLE_SECONDS, TICK_SECONDS, Autoscaler, index_pod, settled
from .feed import SessionFeed, wait_for_wake
from .kube import KubeApi, KubeError
from .metrics import OperatorMetrics
from .settings import Settings
from .spec import SpecError, VoiceAgentSpec, parse_spec

log = logging.getLogger(__name__)
ANNOTATION_PREFIX = GROUP  # kopf's own bookkeeping annotations live under voicefleet.dev/
CHILD_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("policy", "v1", "poddisruptionbudgets"),
)


@dataclass
class _KeyState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    requested: int = 0
    done: int = 0
    last: rc.Outcome | None = None


class Reconciler:
    def __init__(self, kube: KubeApi, settings: Settings, metrics: OperatorMetrics) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self._keys: dict[tuple[str, str], _KeyState] = {}

    async def reconcile(self, namespace: str, name: str, trigger: str) -> rc.Outcome | None:
        state = self._keys.setdefault((namespace, name), _KeyState())
        state.requested += 1
        mine = state.requested
        async with state.lock:
            if state.done >= mine:
                return state.last  # a run that started after this request covered it
            started_for = state.requested
            outcome = await self._run(namespace, name, trigger)
            state.done = started_for
            state.last = outcome
            return outcome

    async def _run(self, namespace: str, name: str, trigger: str) -> rc.Outcome:
        t0 = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(
                rc.reconcile, self.kube, self.settings, namespace, name
            )
        except KubeError as e:
            self.metrics.observe(
                namespace, name, time.perf_counter() - t0, "error", f"api_{e.status}"
            )
            log.warning("reconcile %s/%s (%s) failed, will retry: %s", namespace, name, trigger, e)
            raise kopf.TemporaryError(f"API error: {e}", delay=5) from e
        except Exception:
            self.metrics.observe(namespace, name, time.perf_counter() - t0, "error", "exception")
            log.exception("reconcile %s/%s (%s) crashed", namespace, name, trigger)
            raise kopf.TemporaryError("unexpected error; see operator log", delay=15) from None
        seconds = time.perf_counter() - t0
        if outcome.body is None:
            self.forget(namespace, name)
            return outcome
        result = "blocked" if outcome.problem else "ok"
        self.metrics.observe(
            namespace, name, seconds, result, outcome.problem.reason if outcome.problem else None
        )
        self.metrics.set_ready(namespace, name, outcome.ready)
        for ev in outcome.events:
            ref = kopf.Body(cast(kopf.RawBody, _ref(outcome.body)))
            kopf.event(ref, type=ev.type, reason=ev.reason, message=ev.message)
        log.debug("reconciled %s/%s (%s) in %.3fs: %s", namespace, name, trigger, seconds, result)
        return outcome

    def forget(self, namespace: str, name: str) -> None:
        self._keys.pop((namespace, name), None)
        self.metrics.forget(namespace, name)


def _ref(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }


def owner_name(body: Mapping[str, Any]) -> str | None:
    """The VoiceAgent that controls this child, by its owner reference."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/"):
            return str(ref["name"])
    return None


def configure_kopf(settings: kopf.OperatorSettings, ours: Settings) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.reporting_component = MANAGED_BY
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "voicefleet-"
    settings.peering.standalone = ours.standalone
    if ours.peering is not None:
        # Mandatory: a missing peering object is an error, not a silent second active
        # replica. Distinct priorities: with equal ones every replica would pause.
        settings.peering.name = ours.peering
        settings.peering.mandatory = True
        settings.peering.clusterwide = not ours.namespaces
        settings.peering.priority = random.SystemRandom().randrange(1, 2**31)
    # Resources and namespaces are known at start: no list/watch of CRDs and namespaces
    # (and no RBAC for them).
    settings.scanning.disabled = True
    for group, _version, plural in CHILD_RESOURCES:
        # Server-side filtering: the operator caches only the objects it manages.
        key = (group, plural) if group else plural
        settings.watching.label_selectors[key] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    # The autoscaler's pod index: worker pods only.
    settings.watching.label_selectors["pods"] = (
        f"{LABEL_NAME}={APP_NAME},{LABEL_MANAGED_BY}={MANAGED_BY}"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def login_with_kubeconfig_file(path: str) -> kopf.ConnectionInfo:
    """Credentials as the kubernetes client reads them from the kubeconfig at `path`: every
    form it knows (inline or `tokenFile` token, as a projected ServiceAccount token is
    given; client certificates; exec plugins). kopf's own kubeconfig parser reads inline
    tokens and certificates only, and would log in as anonymous. Called again on a 401, so
    a rotated token file is re-read."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _, token = (header or "").strip().rpartition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    ours: Settings,
    autoscaler: Autoscaler | None = None,
    feed: SessionFeed | None = None,
) -> None:
    """Register every handler on `registry` (no module-level state: tests build their own)."""
    if autoscaler is not None and feed is not None:
        register_autoscaler(registry, autoscaler, feed)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers: in a pod the
        # ServiceAccount, else the kubeconfig ($KUBECONFIG, set from --kubeconfig).
        if ours.kubeconfig is not None:
            return login_with_kubeconfig_file(ours.kubeconfig)
        info = kopf.login_with_service_account(**kwargs)
        return info if info is not None else kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, ours)
        # asyncio.to_thread's pool: reconciles are blocking API calls, mostly waiting.
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(ours.api_threads, thread_name_prefix="kube")
        )

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def _changed(namespace: str | None, name: str, reason: str, **_: Any) -> None:
        await reconciler.reconcile(namespace or "", name, str(reason))

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=ours.resync_seconds,
        initial_delay=ours.resync_seconds,
        registry=registry,
    )
    async def _resync(namespace: str | None, name: str, **_: Any) -> None:
        await reconciler.reconcile(namespace or "", name, "resync")

    @kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry)
    def _deleted(namespace: str | None, name: str, **_: Any) -> None:
        # optional: no finalizer; the children go by garbage collection.
        reconciler.forget(namespace or "", name)

    for group, version, plural in CHILD_RESOURCES:

        @kopf.on.event(
            group,
            version,
            plural,
            labels={LABEL_MANAGED_BY: MANAGED_BY},
            id=f"child-{plural}",
            registry=registry,
        )
        async def _child(body: kopf.Body, namespace: str | None, type: str, **_: Any) -> None:
            owner = owner_name(body)
            if owner is None or not type or type == "ADDED" or not namespace:
                # type None: the initial listing; on.resume reconciles every VoiceAgent.
                # ADDED: a child the reconciler itself just created (only it creates
                # them); re-reconciling for each of the four cost a new VoiceAgent four
                # extra reconciles (bench/reconcile.py). Edits and deletions still repair.
                return
            with contextlib.suppress(kopf.TemporaryError):  # logged; the timer retries
                await reconciler.reconcile(namespace, owner, f"{body.get('kind')} {type}")


def register_autoscaler(
    registry: kopf.OperatorRegistry, autoscaler: Autoscaler, feed: SessionFeed
) -> None:
    """The built-in autoscaler (handlers are async: the feed lives on the event loop): the worker pods feed the `SessionFeed` (one pod watch for
    the whole operator), an index holds each Deployment's replicas, and a daemon per
    VoiceAgent decides whenever the feed, its Deployment or its spec changes."""

    @kopf.on.cleanup(registry=registry)
    async def _close_feed(**_: Any) -> None:
        await feed.close()

    @kopf.on.event(
        "",
        "v1",
        "pods",
        labels={LABEL_NAME: APP_NAME, LABEL_MANAGED_BY: MANAGED_BY},
        id="worker-pods",
        registry=registry,
    )
    async def _worker_pod(
        type: str | None,
        namespace: str | None,
        name: str,
        labels: kopf.Labels,
        status: kopf.Status,
        meta: kopf.Meta,
        **_: Any,
    ) -> None:
        entry = index_pod(namespace, name, labels, status, meta)
        if entry is None:
            return
        ((ns, va), pod) = next(iter(entry.items()))
        if type == "DELETED":
            feed.remove(ns, va, name)
        else:
            feed.upsert(ns, va, pod)

    @kopf.index(
        "apps",
        "v1",
        "deployments",
        labels={LABEL_MANAGED_BY: MANAGED_BY},
        # kopf passes an index by its id, which defaults to the qualified name: name it.
        id="deployment_replicas",
        registry=registry,
    )
    def deployment_replicas(
        namespace: str | None, body: kopf.Body, spec: kopf.Spec, **_: Any
    ) -> Any:
        owner = owner_name(body)
        if owner is None or not namespace:
            return None
        return {(namespace, owner): int(spec.get("replicas", 1))}

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={LABEL_MANAGED_BY: MANAGED_BY},
        id="autoscaler-deployments",
        registry=registry,
    )
    async def _deployment(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        owner = owner_name(body)
        if owner is not None and namespace:
            feed.poke(namespace, owner)  # created, scaled, or gone: decide again

    generations: dict[tuple[str, str], int] = {}

    @kopf.on.event(GROUP, VERSION, PLURAL, id="autoscaler-spec", registry=registry)
    async def _spec(
        type: str | None, namespace: str | None, name: str, meta: kopf.Meta, **_: Any
    ) -> None:
        key = (namespace or "", name)
        if type == "DELETED":
            generations.pop(key, None)
        elif generations.get(key) != meta.get("generation"):
            generations[key] = int(meta.get("generation") or 0)
            feed.poke(*key)  # a spec change (bounds, mode): decide again

    @kopf.daemon(GROUP, VERSION, PLURAL, id="autoscaler", cancellation_timeout=5, registry=registry)
    async def _autoscale(
        namespace: str | None,
        name: str,
        body: kopf.Body,
        spec: kopf.Spec,
        stopped: kopf.DaemonStopped,
        **kwargs: Any,
    ) -> None:
        ns = namespace or ""
        deployment_replicas: kopf.Index[tuple[str, str], int] = kwargs["deployment_replicas"]

        def post(kind: str, reason: str, message: str) -> None:
            kopf.event(
                kopf.Body(cast(kopf.RawBody, _ref(body))), type=kind, reason=reason, message=message
            )

        wake = feed.subscribe(ns, name)
        stop = asyncio.ensure_future(stopped.wait())
        parsed: tuple[Any, VoiceAgentSpec | None] = (None, None)
        try:
            while not stopped:
                wake.clear()  # before reading: a change during this run wakes the next
                timeout = IDLE_SECONDS
                generation = body.get("metadata", {}).get("generation")
                if parsed[0] != generation or parsed[0] is None:
                    try:
                        parsed = (generation, parse_spec(name, ns, dict(spec)))  # live view
                    except SpecError:
                        parsed = (generation, None)  # the reconciler reports it
                va = parsed[1]
                if va is not None and va.autoscaling.mode == "builtin":
                    replicas = list(deployment_replicas.get((ns, name), []))
                    current = replicas[0] if replicas else None
                    readings = feed.readings(ns, name)
                    try:
                        d = await autoscaler.tick(
                            va,
                            feed.pods(ns, name),
                            current,
                            {pod: r.report for pod, r in readings.items()},
                            post,
                            body.get("status") or {},  # a live view, like spec
                        )
                        if not settled(d, current):
                            timeout = TICK_SECONDS
                    except KubeError as e:
                        log.warning("autoscaler %s/%s: %s; retrying", ns, name, e)
                        timeout = TICK_SECONDS
                await wait_for_wake(timeout, stop, wake)
        finally:
            stop.cancel()
            feed.unsubscribe(ns, name, wake)
            autoscaler.forget(ns, name)
