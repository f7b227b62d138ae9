"""The per-VoiceAgent work queue in front of `reconcile.py`: every trigger (handlers.py)
ends in `Reconciler.reconcile(namespace, name)`.

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
import contextlib
import logging
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import kopf

from . import reconcile as rc
from . import triggers
from .events import poster
from .gate import PriorityGate
from .kube import KubeApi, KubeError
from .lookups import Lookups
from .metrics import OperatorMetrics
from .names import AgentNames
from .settings import Settings

log = logging.getLogger(__name__)


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

    @property
    def resync_tick(self) -> float:
        """How often `resync` looks at each VoiceAgent."""
        return min(self.settings.retry_seconds, self.settings.resync_seconds)

    async def resync(self, namespace: str, name: str) -> float:
        """The timer's look at one VoiceAgent (`fleet_loop.FleetLoop` calls it every
        `resync_tick`): a full reconcile, a status refresh or nothing (`timer_action`),
        and a full one when a Secret value its workers use was rotated. Returns the delay
        to the next look."""
        action = self.timer_action(namespace, name)
        if action == "none" and await self.secrets_rotated(namespace, name):
            action = "full"  # a key was rotated: roll the workers (reconcile.secrets_hash)
        if action != "none":
            await self.reconcile(
                namespace,
                name,
                {"resync": "resync", "full": "retry", "status": "refresh"}[action],
                full=action != "status",
                thorough=action == "resync",
            )
        return self.resync_tick

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
