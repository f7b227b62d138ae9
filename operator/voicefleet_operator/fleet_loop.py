"""One loop for every VoiceAgent's autoscaler and failover: a queue of VoiceAgents to look
at, a fixed number of workers draining it, and a due time per VoiceAgent.

What puts a VoiceAgent on the queue: its `SessionFeed` changed (a worker's `/sessions`
reading, a pod came or went, its Deployment or spec changed: `feed.poke`), a LiveKit
webhook for it (failover's `notify`), or a part's due time came (a second while something
is in motion, else the failover sweep, the autoscaler's idle backstop, or the reconciler's
timer, `Reconciler.resync`). A changed input runs failover and the autoscaler on the same
wake-up, side by side, so one waiting on LiveKit never holds up the other; a due time runs
the parts that are due. A VoiceAgent woken while it
runs runs once more after (not twice at once); a burst of wake-ups within
`COALESCE_SECONDS` makes one run. Nothing runs for a VoiceAgent whose inputs did not change
before its due time.

kopf still starts one daemon per VoiceAgent (`attend`), because kopf stops daemons, and
only daemons, when it pauses this operator for a peer (HA): while paused nothing of it
may act. The daemon does no work and never wakes: it enrols the VoiceAgent here, waits
for kopf to stop it, and takes it out.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import kopf

from voicefleet_contract.sessions import SessionsReport

from .active import ActiveLabel, NoActiveLabel
from .autoscale_loop import IDLE_SECONDS, at_rest
from .autoscaler import Decision
from .daemons import COALESCE_SECONDS, TICK_SECONDS, paused_for_a_peer
from .events import PostEvent, poster
from .feed import SessionFeed
from .fleet import Reading, WorkerPod
from .kube import KubeError
from .spec import ParsedSpec, VoiceAgentSpec

log = logging.getLogger(__name__)
Key = tuple[str, str]
# Runs at once. A run mostly waits (on LiveKit, on an API write in a thread); a LiveKit
# deployment that does not answer is waited on once and shared (failover_loop's TtlShared),
# so a handful of workers keeps every VoiceAgent current.
WORKERS: Final = 16
INPUT_PARTS: Final = ("failover", "autoscaler")  # run on every change of an input, and when due
PARTS: Final = (*INPUT_PARTS, "resync")  # resync (the reconciler's timer): only when due


class FailoverPart(Protocol):
    """What the loop asks of failover (failover_loop.Failover)."""

    notify: Callable[[str, str], None]

    async def tick(
        self,
        spec: VoiceAgentSpec,
        pods: Sequence[WorkerPod],
        readings: Mapping[str, Reading],
        post: PostEvent,
    ) -> float: ...

    def waiting(self, namespace: str, name: str) -> int: ...

    def observe(
        self, namespace: str, name: str, pods: Sequence[WorkerPod], readings: Mapping[str, Reading]
    ) -> None: ...

    def forget(self, namespace: str, name: str) -> None: ...


class ResyncPart(Protocol):
    """What the loop asks of the reconciler (reconciler.Reconciler): its timer."""

    @property
    def resync_tick(self) -> float: ...

    async def resync(self, namespace: str, name: str) -> float: ...


class AutoscalerPart(Protocol):
    """What the loop asks of the built-in autoscaler (autoscale_loop.Autoscaler)."""

    async def tick(
        self,
        spec: VoiceAgentSpec,
        pods: Sequence[WorkerPod],
        current: int | None,
        reports: Mapping[str, SessionsReport | None],
        post_event: Callable[[str, str, str], None] = ...,
        status: Mapping[str, Any] | None = None,
        waiting: int = 0,
    ) -> Decision | None: ...

    def forget(self, namespace: str, name: str) -> None: ...


@dataclass
class _Member:
    """What kopf's daemon hands over for one VoiceAgent: its live body and spec (kopf keeps
    them current), the Event poster, its parsed spec (once per generation)."""

    body: kopf.Body
    spec: kopf.Spec
    post: PostEvent
    parsed: ParsedSpec
    feed_wake: asyncio.Event  # the feed subscription's handle (for unsubscribe)
    # When each part is due next (the loop's clock). A run at a due time runs the parts
    # due; a run for a changed input runs failover and the autoscaler.
    due: dict[str, float] = field(default_factory=dict)


class FleetLoop:
    def __init__(
        self,
        feed: SessionFeed,
        autoscaler: AutoscalerPart | None = None,
        failover: FailoverPart | None = None,
        label: ActiveLabel | NoActiveLabel | None = None,
        workers: int = WORKERS,
        resync: ResyncPart | None = None,
        phase: Callable[[float], float] = lambda tick: random.uniform(0, tick),
    ) -> None:
        self.feed = feed
        self.autoscaler = autoscaler
        self.failover = failover
        self.resync = resync
        self.phase = phase  # the first resync's delay: VoiceAgents enrolled together tick apart
        self.label = label or NoActiveLabel()
        self.workers = workers
        # Deployment replicas per VoiceAgent (kopf's index, handed over by the daemons).
        self.replicas: Callable[[Key], int | None] = lambda _key: None
        self._members: dict[Key, _Member] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._again: set[Key] = set()
        self._changed: set[Key] = set()  # woken by an input since their last run began
        self._due: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        if failover is not None:
            failover.notify = self.wake  # a webhook for a VoiceAgent wakes it here

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._worker(), name=f"fleet loop {i}")
                for i in range(self.workers)
            ]

    async def close(self) -> None:
        for h in self._due.values():
            h.cancel()
        self._due.clear()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # --- membership (kopf's daemon per VoiceAgent) ----------------------------------------
    async def attend(
        self,
        namespace: str,
        name: str,
        body: kopf.Body,
        spec: kopf.Spec,
        stopped: kopf.DaemonStopped,
    ) -> None:
        """A VoiceAgent's daemon: enrol it, wait for kopf to stop the daemon (VoiceAgent
        deleted, operator exiting or paused for a peer), take it out. Never wakes between."""
        key = (namespace, name)
        self.start()
        wake = self.feed.subscribe(namespace, name, lambda: self._observed(key))
        m = self._members[key] = _Member(body, spec, poster(body), ParsedSpec(*key), wake)
        now = asyncio.get_running_loop().time()
        m.due = dict.fromkeys(INPUT_PARTS, now)
        if self.resync is not None:
            m.due["resync"] = now + self.phase(self.resync.resync_tick)
        self.label.daemon_started()
        self.wake(*key)
        try:
            await stopped.wait()
        finally:
            self._leave(key, stopped.reason)

    def _leave(self, key: Key, reason: kopf.DaemonStoppingReason | None) -> None:
        m = self._members.pop(key, None)
        h = self._due.pop(key, None)
        if h is not None:
            h.cancel()
        self._again.discard(key)
        self._changed.discard(key)
        if m is not None:
            self.feed.unsubscribe(*key, m.feed_wake)
        if paused_for_a_peer(reason):
            self.feed.forget(*key)  # its watches are stale from now on
        self.label.daemon_stopped(reason)
        self._forget(key)

    def _forget(self, key: Key) -> None:
        if self.autoscaler is not None:
            self.autoscaler.forget(*key)
        if self.failover is not None:
            self.failover.forget(*key)

    def due_in(self, namespace: str, name: str) -> float | None:
        """Seconds until this VoiceAgent runs if nothing wakes it (None: queued, running,
        or not enrolled)."""
        h = self._due.get((namespace, name))
        return None if h is None else h.when() - asyncio.get_running_loop().time()

    # --- wake-ups -------------------------------------------------------------------------
    def wake(self, namespace: str, name: str) -> None:
        """An input of this VoiceAgent changed: both parts look at it soon (within
        `COALESCE_SECONDS`)."""
        key = (namespace, name)
        if key in self._members:
            self._changed.add(key)
            self._schedule(key, COALESCE_SECONDS)

    def _observed(self, key: Key) -> None:
        """The feed changed for `key`: failover records what each worker serves at once
        (a reading may be gone by the run), and the VoiceAgent is looked at."""
        if self.failover is not None:
            self.failover.observe(*key, self.feed.pods(*key), self.feed.readings(*key))
        self.wake(*key)

    def _schedule(self, key: Key, delay: float) -> None:
        """Run `key` in `delay` seconds, unless it is already due sooner."""
        if key not in self._members:
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + delay
        h = self._due.get(key)
        if h is not None:
            if h.when() <= at:
                return
            h.cancel()
        self._due[key] = loop.call_at(at, self._enqueue, key)

    def _enqueue(self, key: Key) -> None:
        self._due.pop(key, None)
        if key in self._running:
            self._again.add(key)  # once more when this run ends
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    # --- the workers ----------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            m = self._members.get(key)
            if m is None:
                continue
            self._running.add(key)
            delay = TICK_SECONDS
            try:
                delay = await self._run(key, m)
            except Exception:  # one VoiceAgent's bug must not stop the others
                log.exception("fleet loop %s/%s: run failed; retrying", *key)
            finally:
                self._running.discard(key)
            if key not in self._members:
                self._forget(key)  # it left while this run wrote its state back
            elif key in self._again:
                self._again.discard(key)
                self._schedule(key, COALESCE_SECONDS)
            else:
                self._schedule(key, delay)

    async def _run(self, key: Key, m: _Member) -> float:
        """The parts of one VoiceAgent, side by side: failover and the autoscaler when an
        input changed, and every part whose due time came. Returns when it is due next."""
        now = asyncio.get_running_loop().time()
        changed = key in self._changed
        self._changed.discard(key)  # a change from here on makes another run
        parts = [
            p
            for p, at in m.due.items()
            if (changed and p in INPUT_PARTS) or at <= now + COALESCE_SECONDS
        ]
        results = await asyncio.gather(
            *(self._part(p, key, m) for p in parts), return_exceptions=True
        )
        for part, r in zip(parts, results, strict=True):
            if isinstance(r, asyncio.CancelledError):
                raise r
            if isinstance(r, BaseException):  # one part's bug must not stop the others
                log.error("%s %s/%s: run failed; retrying", part, *key, exc_info=r)
                r = TICK_SECONDS
            m.due[part] = now + r
        return max(0.0, min(m.due.values()) - asyncio.get_running_loop().time())

    async def _part(self, part: str, key: Key, m: _Member) -> float:
        if part == "resync":
            return await self._resync(key)
        va = m.parsed.of(m.body, m.spec)
        if va is None:  # it does not parse: the reconciler says why; an edit wakes it
            return IDLE_SECONDS
        if part == "failover":
            return await self._failover(key, va, m)
        return await self._autoscale(key, va, m)

    async def _resync(self, key: Key) -> float:
        assert self.resync is not None  # the part exists only with a reconciler
        try:
            return await self.resync.resync(*key)
        except Exception as e:  # the reconcile said why; its failure makes the next one full
            log.warning("resync %s/%s: %s; again at the next tick", *key, e)
            return self.resync.resync_tick

    async def _failover(self, key: Key, va: VoiceAgentSpec, m: _Member) -> float:
        if self.failover is None:
            return IDLE_SECONDS
        ns, name = key
        try:
            delay = await self.failover.tick(
                va, self.feed.pods(ns, name), self.feed.readings(ns, name), m.post
            )
        except KubeError as e:
            log.warning("failover %s/%s: %s; retrying", ns, name, e)
            return TICK_SECONDS
        self.feed.set_waiting(ns, name, self.failover.waiting(ns, name))
        return delay

    async def _autoscale(self, key: Key, va: VoiceAgentSpec, m: _Member) -> float:
        if self.autoscaler is None or va.autoscaling.mode != "builtin":
            return IDLE_SECONDS
        ns, name = key
        current = self.replicas(key)
        readings = self.feed.readings(ns, name)
        try:
            d = await self.autoscaler.tick(
                va,
                self.feed.pods(ns, name),
                current,
                {pod: r.report for pod, r in readings.items()},
                m.post,
                m.body.get("status") or {},  # a live view, like spec
                self.feed.waiting(ns, name),
            )
        except KubeError as e:
            log.warning("autoscaler %s/%s: %s; retrying", ns, name, e)
            return TICK_SECONDS
        return IDLE_SECONDS if at_rest(d, current) else TICK_SECONDS
