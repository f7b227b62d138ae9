"""Thin kopf handlers: every trigger ends in `Reconciler.reconcile(namespace, name)`.

Triggers: the VoiceAgent's create/update/resume (kopf retries these on transient
errors), events of the owned Deployments, ConfigMaps, Services and PDBs (deleted or
edited by hand -> repaired within a second, status follows the rollout), events of the
worker pods when what the status says about one changes (unschedulable, a container stuck:
a status refresh), and a timer per VoiceAgent (the backstop: Secrets that appear later,
anything a watch missed).

Not every trigger needs a full reconcile (`triggers.py`): a child event that is only a
controller writing the child's status refreshes the VoiceAgent's status (a Deployment's)
or nothing (a PDB's); the timer, every `--retry-seconds`, reconciles in full only a
VoiceAgent whose last reconcile had a problem or failed, or whose last full reconcile is
older than `--resync-seconds` (jittered, so VoiceAgents created together do not resync
together), and refreshes the status of one that is not settled.

Reconciles of one VoiceAgent never overlap: requests that arrive while one runs are
folded into a single follow-up run (a full one if any of them asked for it), so a burst
of Deployment events during a rollout costs two runs, not twenty.

Across VoiceAgents, the API threads go first to the step of a full reconcile that
applies the Deployment (`reconcile.reconcile_steps`), then to the rest of one and to
status refreshes (`gate.PriorityGate`): 1,000 VoiceAgents created at once get their
Deployments before the Services, PDBs and status writes of the first ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import logging
import random
import socket
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
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

from . import reconcile as rc
from . import triggers
from .autoscale_loop import IDLE_SECONDS, Autoscaler, settled
from .daemons import TICK_SECONDS, paused_for_a_peer, wait_for_wake
from .events import poster
from .feed import SessionFeed
from .fleet import index_pod
from .gate import PriorityGate
from .kube import KubeApi, KubeError
from .lookups import Lookups
from .metrics import OperatorMetrics
from .names import AgentNames, claim_of_configmap, claim_of_voiceagent
from .settings import Settings
from .spec import ParsedSpec

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


ChildEvent = tuple[str, str, dict[str, Any]]  # kind, event type, the child's body
# Who gets the next API thread: the step of a full reconcile that applies the Deployment,
# then the rest of one and status refreshes, first come first served. A burst of new
# VoiceAgents gets all its Deployments before the Services, PDBs and status writes of
# the first ones.
DEPLOY, REST, STATUS = 0, 1, 1


@dataclass
class _KeyState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    requested: int = 0
    done: int = 0
    pending: int = 0  # requests running or waiting for the lock
    full_requested: int = 0  # the last request that asked for a full reconcile
    status_requested: int = 0  # the last request that asked for a status refresh
    thorough: bool = False  # a full reconcile that also deletes unexpected autoscalers
    children: list[ChildEvent] = field(default_factory=list)  # not yet looked at
    last: rc.Outcome | None = None
    failed: bool = False  # the last run raised (an API error): retry in full
    marks: triggers.Marks | None = None  # what the last full reconcile applied
    last_full: float | None = None  # monotonic time the last full reconcile finished
    period: float = 0.0  # when the next resync is due after last_full (jittered)
    first_body: dict[str, Any] | None = None  # kopf's copy, for the key's first run
    secrets: rc.SecretsApplied | None = None  # the Secret values the last full one applied


class Reconciler:
    def __init__(
        self,
        kube: KubeApi,
        settings: Settings,
        metrics: OperatorMetrics,
        lookups: Lookups | None = None,
        clock: Callable[[], float] = time.monotonic,
        names: AgentNames | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self.lookups = lookups or Lookups.cached()
        self.names = names
        self.clock = clock
        self._keys: dict[tuple[str, str], _KeyState] = {}
        self._random = random.Random()
        self._gate = PriorityGate(settings.api_threads)
        self._background: set[asyncio.Task[None]] = set()

    async def reconcile(
        self,
        namespace: str,
        name: str,
        trigger: str,
        *,
        full: bool = True,
        thorough: bool = False,
        child: ChildEvent | None = None,
        body: dict[str, Any] | None = None,
    ) -> rc.Outcome | None:
        """Run (or fold into a run) a full reconcile; with `full=False` a status refresh
        (which turns into a full reconcile when it is not enough); for a `child` event,
        whatever `triggers.child_action` says once the run before it has finished (its
        events are those of its own applies, not drift). `body`: the VoiceAgent as kopf
        just saw it (create, resume), used instead of a GET by the key's first run if
        nothing else was folded into it."""
        state = self._keys.setdefault((namespace, name), _KeyState())
        state.requested += 1
        mine = state.requested
        if body is not None and mine == 1:
            state.first_body = body
        if child is not None:
            state.children.append(child)
        elif full:
            state.full_requested = mine
            state.thorough = state.thorough or thorough
        else:
            state.status_requested = mine
        state.pending += 1
        try:
            async with state.lock:
                if state.done >= mine:
                    return state.last  # a run that started after this request covered it
                started_for = state.requested
                events, state.children = state.children, []
                action, deployment = self._decide(state, events)
                if action != "none":
                    state.last = await self._run(
                        namespace, name, trigger, state, action == "full", deployment
                    )
                state.done = started_for
                return state.last
        finally:
            state.pending -= 1

    def _decide(
        self, state: _KeyState, events: list[ChildEvent]
    ) -> tuple[triggers.Action, dict[str, Any] | None]:
        """What the requests folded into this run need, and the watch's latest copy of the
        Deployment for a status refresh."""
        marks = None if state.failed else state.marks
        if state.full_requested > state.done or marks is None:
            return "full", None
        action: triggers.Action = "status" if state.status_requested > state.done else "none"
        deployment = None
        for kind, type_, body in events:
            wanted = triggers.child_action(kind, type_, body, marks)
            if wanted == "full":
                return "full", None
            if wanted == "status":
                action = "status"
                if kind == "Deployment":
                    deployment = body  # events come in order: the last is the latest
        return action, deployment

    async def _run(
        self,
        namespace: str,
        name: str,
        trigger: str,
        state: _KeyState,
        full: bool,
        deployment: dict[str, Any] | None,
    ) -> rc.Outcome:
        t0 = time.perf_counter()
        try:
            outcome: rc.Outcome | None = None
            if not full and state.marks is not None:
                async with self._gate.slot(STATUS):
                    outcome = await asyncio.to_thread(
                        rc.refresh_status, self.kube, namespace, name, state.marks, deployment
                    )
            if outcome is None:
                full = True
                thorough, state.thorough = state.thorough, False
                body, state.first_body = state.first_body, None
                steps = rc.reconcile_steps(
                    self.kube,
                    self.settings,
                    namespace,
                    name,
                    lookups=self.lookups,
                    thorough=thorough,
                    body=body if state.requested == 1 else None,
                    agent_names=self.names.rival_from_thread if self.names else None,
                )
                async with self._gate.slot(DEPLOY):
                    outcome = await asyncio.to_thread(_step, steps)
                if outcome is None:
                    async with self._gate.slot(REST):
                        outcome = await asyncio.to_thread(_step, steps)
                    assert outcome is not None, "reconcile_steps yields once"
        except KubeError as e:
            state.failed = True
            self.metrics.observe(
                namespace, name, time.perf_counter() - t0, "error", f"api_{e.status}"
            )
            log.warning("reconcile %s/%s (%s) failed, will retry: %s", namespace, name, trigger, e)
            raise kopf.TemporaryError(f"API error: {e}", delay=5) from e
        except Exception:
            state.failed = True
            self.metrics.observe(namespace, name, time.perf_counter() - t0, "error", "exception")
            log.exception("reconcile %s/%s (%s) crashed", namespace, name, trigger)
            raise kopf.TemporaryError("unexpected error; see operator log", delay=15) from None
        state.failed = False
        seconds = time.perf_counter() - t0
        if outcome.body is None:
            self.forget(namespace, name)
            return outcome
        if full:
            state.marks = outcome.marks
            state.secrets = outcome.secrets
            state.last_full = self.clock()
            # Jittered below the period: VoiceAgents created (or resumed) together spread
            # their resyncs over the last fifth of it instead of all in the same second.
            state.period = self.settings.resync_seconds * self._random.uniform(0.8, 1.0)
        result = "blocked" if outcome.problem else "ok"
        self.metrics.observe(
            namespace, name, seconds, result, outcome.problem.reason if outcome.problem else None
        )
        self.metrics.set_ready(namespace, name, outcome.ready)
        if outcome.events:
            post = poster(outcome.body)
            for ev in outcome.events:
                post(ev.type, ev.reason, ev.message)
        log.debug(
            "reconciled %s/%s (%s, %s) in %.3fs: %s",
            namespace,
            name,
            trigger,
            "full" if full else "status",
            seconds,
            result,
        )
        return outcome

    def submit(
        self,
        namespace: str,
        name: str,
        trigger: str,
        *,
        child: ChildEvent | None = None,
        full: bool = True,
    ) -> None:
        """`reconcile` in the background; its errors are logged by the run, and retried
        by the timer."""
        task = asyncio.create_task(self._quietly(namespace, name, trigger, child, full))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(
        self, namespace: str, name: str, trigger: str, child: ChildEvent | None, full: bool
    ) -> None:
        with contextlib.suppress(kopf.TemporaryError):
            await self.reconcile(namespace, name, trigger, child=child, full=full)

    async def close(self) -> None:
        """Cancel the background requests (the operator is stopping)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def timer_action(self, namespace: str, name: str) -> triggers.Action:
        state = self._keys.get((namespace, name))
        if state is None or state.pending:
            # None: its create or resume handler has not run yet (kopf runs it, and
            # retries it). Pending: a run is under way or waiting, and covers this tick.
            return "none"
        last = state.last
        return triggers.timer_action(
            self.clock(),
            state.last_full,
            state.period,
            failed=state.failed,
            problem=last is None or last.problem is not None,
            settled=last is not None and triggers.settled(last.status),
            marks=state.marks,
        )

    async def secrets_rotated(self, namespace: str, name: str) -> bool:
        """Whether a Secret value this VoiceAgent's workers use changed since its last full
        reconcile (`reconcile.secrets_rotated`: the shared Secret answers, so the timer of
        a thousand VoiceAgents reads each Secret once every few seconds, not a thousand
        times, and no Secret watch, which would need every Secret of the cluster)."""
        state = self._keys.get((namespace, name))
        if state is None or state.secrets is None or state.pending:
            return False
        applied = state.secrets
        async with self._gate.slot(STATUS):
            return await asyncio.to_thread(
                rc.secrets_rotated, self.kube, self.lookups, namespace, applied
            )

    def forget(self, namespace: str, name: str) -> None:
        self._keys.pop((namespace, name), None)
        self.metrics.forget(namespace, name)


def _step(steps: Generator[None, None, rc.Outcome]) -> rc.Outcome | None:
    """Run a reconcile to its next yield (None) or its end (the Outcome)."""
    try:
        next(steps)
    except StopIteration as done:
        outcome: rc.Outcome = done.value
        return outcome
    return None


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

    tick = min(ours.retry_seconds, ours.resync_seconds)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=tick,
        # A random phase: VoiceAgents resumed or created together tick apart.
        initial_delay=lambda **_: random.uniform(0, tick),
        registry=registry,
    )
    async def _resync(namespace: str | None, name: str, **_: Any) -> None:
        ns = namespace or ""
        action = reconciler.timer_action(ns, name)
        if action == "none" and await reconciler.secrets_rotated(ns, name):
            action = "full"  # a key was rotated: roll the workers (reconcile.secrets_hash)
        if action != "none":
            await reconciler.reconcile(
                ns,
                name,
                {"resync": "resync", "full": "retry", "status": "refresh"}[action],
                full=action != "status",
                thorough=action == "resync",
            )

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


def register_autoscaler(
    registry: kopf.OperatorRegistry, autoscaler: Autoscaler, feed: SessionFeed
) -> None:
    """The built-in autoscaler: the worker pods feed the `SessionFeed` (one pod watch for
    the whole operator), an index holds each Deployment's replicas, and a daemon per
    VoiceAgent decides whenever the feed, its Deployment or its spec changes. The handlers
    are async: the feed lives on the event loop."""

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

        post = poster(body)
        wake = feed.subscribe(ns, name)
        stop = asyncio.ensure_future(stopped.wait())
        parsed = ParsedSpec(ns, name)
        try:
            while not stopped:
                wake.clear()  # before reading: a change during this run wakes the next
                timeout = IDLE_SECONDS
                va = parsed.of(body, spec)
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
                            feed.waiting(ns, name),
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
            if paused_for_a_peer(stopped.reason):
                feed.forget(ns, name)
            autoscaler.forget(ns, name)
