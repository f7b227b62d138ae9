"""The one place kopf is wired: every decorator of the operator, each a few lines that
call named functions of the modules below it (docs/architecture.md).

Triggers of a reconcile (`reconciler.Reconciler`, which folds and prices them): the
VoiceAgent's create/update/resume (kopf retries these on transient errors), events of the
owned Deployments, ConfigMaps, Services and PDBs (deleted or edited by hand -> repaired
within a second, status follows the rollout), events of the worker pods when what the
status says about one changes (unschedulable, a container stuck: a status refresh), and
its timer (`Reconciler.resync`, run by `fleet_loop.FleetLoop`: the backstop for Secrets
that appear later or are rotated, and anything a watch missed).
Beside them: the worker pods into the `SessionFeed`, every VoiceAgent into the one loop of
the built-in autoscaler and failover (`fleet_loop.FleetLoop`), the LiveKit webhook receiver, spec.telephony's sync
(`telephony_loop`), and the custom metrics API.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
import random
import socket
from collections.abc import Mapping
from typing import Any

import kopf

from voicefleet_contract import (
    APP_NAME,
    GROUP,
    KIND,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    PLURAL,
    VERSION,
)

from . import triggers
from .active import ActiveLabel, NoActiveLabel
from .custom_metrics_server import CustomMetricsServer, serve_retrying
from .failover_loop import Failover, start_webhooks, webhook_server
from .feed import SessionFeed
from .fleet import index_pod
from .fleet_loop import FleetLoop
from .kopf_storage import LeanDiffBaseStorage
from .names import claim_of_configmap, claim_of_voiceagent
from .reconciler import Reconciler
from .settings import Settings
from .telephony_loop import DELETE_RETRIES as TELEPHONY_DELETE_RETRIES
from .telephony_loop import TelephonySync, wants_sync
from .telephony_loop import remove as telephony_remove

log = logging.getLogger(__name__)
ANNOTATION_PREFIX = GROUP  # kopf's own bookkeeping annotations live under voicefleet.dev/
CHILD_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("policy", "v1", "poddisruptionbudgets"),
)
NETWORK_POLICIES = ("networking.k8s.io", "v1", "networkpolicies")


def child_resources(ours: Settings) -> tuple[tuple[str, str, str], ...]:
    """The child kinds watched for drift. NetworkPolicies only with --worker-ingress: an
    operator without the flag needs no RBAC for them (a watch it may not list stops the
    whole operator)."""
    return CHILD_RESOURCES + ((NETWORK_POLICIES,) if ours.worker_ingress is not None else ())


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
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(
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
    for group, _version, plural in child_resources(ours):
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
    feed: SessionFeed | None = None,
) -> None:
    """Register every handler on `registry` (no module-level state: tests build their own)."""
    if feed is not None:
        register_feed(registry, feed)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers: in a pod the
        # ServiceAccount, else the kubeconfig ($KUBECONFIG, set from --kubeconfig).
        if ours.kubeconfig is not None:
            return login_with_kubeconfig_file(ours.kubeconfig)
        info = kopf.login_with_service_account(**kwargs)
        return info if info is not None else kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        configure_kopf(settings, ours)
        if reconciler.names is not None:
            reconciler.names.attach(
                kwargs["agent_name_claims"],
                kwargs["agent_name_holders"],
                asyncio.get_running_loop(),
            )
        # asyncio.to_thread's pool: reconciles are blocking API calls, mostly waiting.
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(ours.api_threads, thread_name_prefix="kube")
        )

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        await reconciler.close()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def _changed(
        namespace: str | None, name: str, reason: str, body: kopf.Body, **_: Any
    ) -> None:
        # kopf's copy is as fresh as a GET for a new VoiceAgent (create) and at start
        # (resume); an update's may predate this operator's own last status write.
        fresh = copy.deepcopy(dict(body)) if str(reason) in ("create", "resume") else None
        await reconciler.reconcile(namespace or "", name, str(reason), body=fresh)

    @kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry)
    def _deleted(namespace: str | None, name: str, **_: Any) -> None:
        # optional: no finalizer; the children go by garbage collection.
        reconciler.forget(namespace or "", name)

    # Worker pods whose status the VoiceAgent reports (unschedulable, stuck): the last
    # signal of each, so only a change asks for a status refresh (triggers.pod_action).
    signals: dict[tuple[str, str], str] = {}

    @kopf.on.event(
        "",
        "v1",
        "pods",
        # The autoscaler's filter: kopf serves both handlers from one watch.
        labels={LABEL_NAME: APP_NAME, LABEL_MANAGED_BY: MANAGED_BY},
        id="worker-pod-signals",
        registry=registry,
    )
    async def _pod_signal(
        type: str | None,
        namespace: str | None,
        name: str,
        body: kopf.Body,
        labels: kopf.Labels,
        **_: Any,
    ) -> None:
        key = (namespace or "", name)
        after = None if type == "DELETED" else triggers.pod_signal(body)
        before = signals.pop(key, None)
        if after is not None:
            signals[key] = after
        owner = labels.get(LABEL_INSTANCE)
        if owner and namespace and triggers.pod_action(type, before, after) == "status":
            reconciler.submit(namespace, owner, f"Pod {type} ({after or 'recovered'})", full=False)

    if reconciler.names is not None:
        register_agent_names(registry, reconciler)

    for group, version, plural in child_resources(ours):

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
            kind = str(body.get("kind"))
            # A controller writing the child's status needs at most a status refresh; an
            # edit by hand, a full reconcile (decided when the run starts). In the
            # background: kopf hands this child's next event over only once this handler
            # returns, and a run still to come folds it in (one refresh with the latest
            # state, not one after another for each step of a rollout).
            reconciler.submit(namespace, owner, f"{kind} {type}", child=(kind, type, dict(body)))


def register_agent_names(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    """The indexes `names.AgentNames` answers from (kopf fills them from its watches of
    VoiceAgents and agent ConfigMaps before any handler runs), and the nudge that lets a
    VoiceAgent waiting for an agent name take it within seconds of its holder letting go."""

    @kopf.index(GROUP, VERSION, PLURAL, id="agent_name_claims", registry=registry)
    def agent_name_claims(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
        claim = claim_of_voiceagent(namespace or "", name, body)
        return None if claim is None else {claim.key: claim}

    @kopf.index(
        "",
        "v1",
        "configmaps",
        labels={LABEL_MANAGED_BY: MANAGED_BY},
        id="agent_name_holders",
        registry=registry,
    )
    def agent_name_holders(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
        owner = owner_name(body)
        key = claim_of_configmap(namespace or "", body.get("data"))
        if owner is None or not namespace or key is None:
            return None
        return {(namespace, owner): key}

    @kopf.on.event(GROUP, VERSION, PLURAL, id="agent-names", registry=registry)
    async def _claims(
        type: str | None, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> None:
        names = reconciler.names
        if names is None:
            return
        ns = namespace or ""
        claim = None if type == "DELETED" else claim_of_voiceagent(ns, name, body)
        for other in names.changed(ns, name, claim):
            log.info(
                "%s/%s let go of its agent name claim: reconciling %s/%s, which claims it too",
                ns, name, *other,
            )  # fmt: skip
            reconciler.submit(*other, "agent name released")


def register_feed(registry: kopf.OperatorRegistry, feed: SessionFeed) -> None:
    """The inputs of the built-in autoscaler and failover: the worker pods feed the `SessionFeed` (one pod
    watch for the whole operator), an index holds each Deployment's replicas, and a change
    of the Deployment or the spec pokes the feed, which wakes the VoiceAgent in
    `FleetLoop`. The handlers are async: the feed lives on the event loop."""

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


def register_telephony(registry: kopf.OperatorRegistry, sync: TelephonySync) -> None:
    """spec.telephony onto LiveKit's SIP service (telephony_loop.py): on each change, on a
    timer until it is in sync, and off LiveKit before the VoiceAgent goes."""

    def concerned(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
        return wants_sync(spec, status)

    def has_telephony(spec: kopf.Spec, **_: Any) -> bool:
        return bool(spec.get("telephony"))

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="telephony", when=concerned, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="telephony", when=concerned, registry=registry)
    @kopf.on.update(
        GROUP, VERSION, PLURAL, id="telephony", field="spec", when=concerned, registry=registry
    )
    async def _sync(body: kopf.Body, **_: Any) -> None:
        await sync.sync(body)

    @kopf.timer(
        GROUP, VERSION, PLURAL, id="telephony-resync", interval=sync.settings.retry_seconds,
        when=concerned, registry=registry,
    )  # fmt: skip
    async def _resync(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        if namespace and sync.due(namespace, name):
            await sync.sync(body)

    # Not optional: kopf's finalizer (every VoiceAgent has it for its daemons) waits for
    # this handler, so the trunks and rule leave LiveKit before the VoiceAgent goes.
    @kopf.on.delete(
        GROUP, VERSION, PLURAL, id="telephony-delete", when=has_telephony,
        retries=TELEPHONY_DELETE_RETRIES, registry=registry,
    )  # fmt: skip
    async def _delete(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        await telephony_remove(sync, body, namespace or "", name)


def register_webhooks(
    registry: kopf.OperatorRegistry,
    failover: Failover,
    host: str,
    webhook_port: int,
    active: ActiveLabel | NoActiveLabel | None = None,
) -> None:
    """The LiveKit webhook receiver for the operator's life (`webhook_port` 0: no receiver;
    the worker view and the sweep still run). `active` is the label `FleetLoop` keeps on
    this replica's pod while it acts (HA: webhooks go there)."""
    label = active or NoActiveLabel()
    server = webhook_server(failover, label)

    @kopf.on.startup(registry=registry)
    async def _start_webhooks(**_: Any) -> None:
        await start_webhooks(failover, server, host, webhook_port)

    @kopf.on.cleanup(registry=registry)
    async def _stop_webhooks(**_: Any) -> None:
        await server.stop()
        await failover.close()
        await label.close()


def register_fleet(registry: kopf.OperatorRegistry, fleet: FleetLoop) -> None:
    """Every VoiceAgent into the one loop of the autoscaler and failover
    (fleet_loop.FleetLoop). The daemon per VoiceAgent is membership only: kopf stops
    daemons when it pauses this operator for a peer, and then nothing of it may act."""

    @kopf.on.cleanup(registry=registry)
    async def _close_fleet(**_: Any) -> None:
        await fleet.close()

    @kopf.daemon(GROUP, VERSION, PLURAL, id="fleet", cancellation_timeout=5, registry=registry)
    async def _member(
        namespace: str | None,
        name: str,
        body: kopf.Body,
        spec: kopf.Spec,
        stopped: kopf.DaemonStopped,
        **kwargs: Any,
    ) -> None:
        index = kwargs.get("deployment_replicas")  # registered with the autoscaler
        if index is not None:
            fleet.replicas = lambda key: next(iter(index.get(key, [])), None)
        await fleet.attend(namespace or "", name, body, spec, stopped)


def register_custom_metrics(
    registry: kopf.OperatorRegistry, server: CustomMetricsServer, host: str, port: int
) -> None:
    """The custom metrics API for the operator's life (custom_metrics_server.py)."""
    task: asyncio.Task[None] | None = None

    @kopf.on.startup(registry=registry)
    async def _start_custom_metrics(**_: Any) -> None:
        nonlocal task
        task = asyncio.create_task(serve_retrying(server, host, port), name="custom metrics API")

    @kopf.on.cleanup(registry=registry)
    async def _stop_custom_metrics(**_: Any) -> None:
        if task is not None:
            task.cancel()
        await server.stop()
