"""Failover's shell: one tick of one VoiceAgent (`Failover.tick`) notices lost sessions and
re-dispatches them; `fleet_loop.FleetLoop` calls it whenever the VoiceAgent's inputs change.

The decisions are `failover.py`'s (pure); this module only gathers evidence and acts:

- it follows every worker pod's `/sessions` through the `SessionFeed` (one long poll per
  worker, shared with the autoscaler), and runs whenever a report changes: rooms of a pod
  that is gone from the API (deleted, force-deleted) or refuses connections (its process
  died, which drops the open long poll at once) are losses; a room that vanished from a worker that still answers is a
  suspect, confirmed against LiveKit (callers still there, no agent, the job did not end
  on purpose);
- LiveKit's `participant_left` webhooks (verified by `webhook.py`) arrive through
  `on_webhook` and become losses of the VoiceAgent whose agent name and credentials match;
- every `sweep_seconds` it lists the LiveKit deployment's rooms and their dispatches and
  participants (the backstop, also after an operator restart). That snapshot is taken once
  per deployment and period and shared by all its VoiceAgents (`TtlShared`), as is the
  read of a credentials Secret several VoiceAgents use;
- each open case is stepped against the room as LiveKit shows it now, and a dispatch is
  `AgentDispatchService.create_dispatch` with the same agent name and metadata.

A LiveKit API outage only delays this: a failed read leaves the case open for the next
tick, and since every dispatch decision re-reads the room's dispatches, a request that
reached LiveKit but whose answer was lost is not repeated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Final, Protocol

import aiohttp
from livekit import api as lkapi
from prometheus_client import Counter, Gauge, Histogram

from voicefleet_contract import metrics as m
from voicefleet_contract.livekit_url import http_url
from voicefleet_contract.metric_build import build_metric, label_sets
from voicefleet_contract.one_agent import AGENT_NAME_ATTRIBUTE

from . import failover as fo
from .active import ActiveLabel, NoActiveLabel
from .autoscaler import free_slots, samples_of
from .credentials import NoSecret, SecretData, credentials_of
from .daemons import TICK_SECONDS
from .events import PostEvent
from .fleet import Reading, WorkerPod
from .kube import KubeApi, KubeError, path
from .metrics import OperatorMetrics
from .names import AgentNames
from .shared import TtlShared
from .spec import VoiceAgentSpec
from .webhook import RESULTS, WebhookServer, WebhookVerifier, secret_id

log = logging.getLogger(__name__)
SECRET_REFRESH_SECONDS = 30.0  # a credentials Secret is read again once this old
# A Secret that is missing or could not be read is tried again this soon (one read per
# Secret, however many VoiceAgents use it); the credentials read before stay in use.
SECRET_RETRY_SECONDS = 5.0
# How long a handled loss is remembered: longer than LiveKit takes to time a dead
# participant out (~20 s) and to deliver its webhook (retries included).
SETTLED_SECONDS = 300.0
# How often a VoiceAgent whose agent name another holds looks again (dict lookups only).
YIELD_RECHECK_SECONDS = 2.0
# A hung worker's pod is deleted with this grace: the kubelet's SIGKILL follows at once.
HUNG_POD_GRACE_SECONDS = 1


class FailoverMetrics:
    def __init__(self, metrics: OperatorMetrics) -> None:
        r = metrics.registry
        self.failovers: Counter = build_metric(m.FAILOVERS, r)
        self.latency: Histogram = build_metric(m.FAILOVER_LATENCY, r)
        self.orphans: Counter = build_metric(m.ORPHANS_FOUND, r)
        self.waiting: Gauge = build_metric(m.CALLS_WAITING, r)
        self.unplaced: Counter = build_metric(m.CALLS_UNPLACED, r)
        self.webhooks: Counter = build_metric(m.WEBHOOK_REQUESTS, r)

    def forget(self, namespace: str, name: str) -> None:
        for metric in (self.failovers, self.latency, self.orphans, self.waiting, self.unplaced):
            for labels in label_sets(metric):
                if labels[:2] == (namespace, name):
                    metric.remove(*labels)


# --- LiveKit ------------------------------------------------------------------------------


class Rooms(Protocol):
    """What failover reads from and asks of one LiveKit deployment."""

    async def rooms(self) -> list[str]: ...

    async def view(self, room: str) -> fo.RoomView: ...

    async def dispatch(self, room: str, agent_name: str, metadata: str) -> str: ...

    async def delete_dispatch(self, room: str, dispatch_id: str) -> None: ...

    async def remove_participant(self, room: str, identity: str) -> None: ...

    async def close(self) -> None: ...


def seconds(t: int | float) -> float:
    """LiveKit timestamps come in s, ms or ns depending on the field: unix seconds."""
    if t > 1e17:
        return t / 1e9
    if t > 1e14:
        return t / 1e6
    if t > 1e11:
        return t / 1e3
    return float(t)


class LiveKitRooms:
    """`Rooms` over livekit-api's Twirp clients (RoomService, AgentDispatchService)."""

    def __init__(self, url: str, api_key: str, api_secret: str, timeout: float = 5.0) -> None:
        self.url = http_url(url)
        self._key = api_key
        self._secret = api_secret
        self._timeout = timeout
        self._api: lkapi.LiveKitAPI | None = None

    def _client(self) -> lkapi.LiveKitAPI:
        if self._api is None:  # created lazily: its aiohttp session needs the running loop
            self._api = lkapi.LiveKitAPI(
                self.url,
                self._key,
                self._secret,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                failover=False,
            )
        return self._api

    async def rooms(self) -> list[str]:
        resp = await self._client().room.list_rooms(lkapi.ListRoomsRequest())
        return [r.name for r in resp.rooms]

    async def view(self, room: str) -> fo.RoomView:
        c = self._client()
        found = await c.room.list_rooms(lkapi.ListRoomsRequest(names=[room]))
        if not found.rooms:
            return fo.RoomView(room, False)
        people = await c.room.list_participants(lkapi.ListParticipantsRequest(room=room))
        dispatches = await c.agent_dispatch.list_dispatch(room)
        return fo.RoomView(
            room,
            True,
            tuple(
                fo.Participant(
                    p.identity,
                    int(p.kind),
                    p.attributes.get(AGENT_NAME_ATTRIBUTE, ""),
                    p.joined_at_ms / 1000 if p.joined_at_ms else float(p.joined_at),
                )
                for p in people.participants
                if p.state != lkapi.ParticipantInfo.State.DISCONNECTED
            ),
            tuple(
                fo.Dispatch(
                    d.agent_name,
                    seconds(d.state.created_at),
                    d.metadata,
                    d.id,
                    int(d.state.jobs[-1].state.status) if d.state.jobs else None,
                )
                for d in dispatches
            ),
        )

    async def dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        req = lkapi.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
        d = await self._client().agent_dispatch.create_dispatch(req)
        return str(d.id)

    async def delete_dispatch(self, room: str, dispatch_id: str) -> None:
        await self._client().agent_dispatch.delete_dispatch(dispatch_id, room)

    async def remove_participant(self, room: str, identity: str) -> None:
        req = lkapi.RoomParticipantIdentity(room=room, identity=identity)
        try:
            await self._client().room.remove_participant(req)
        except lkapi.TwirpError as e:
            if e.code != "not_found":  # gone already: what we wanted
                raise

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None


class DryRunRooms:
    """`Rooms` for a dry run (Settings.dry_run): reads go to LiveKit, every write is
    logged and not made. A dispatch it did not make gets the id `dry-run`, so failover
    goes on as if it had asked (and asks again when no agent comes)."""

    def __init__(self, inner: Rooms) -> None:
        self.inner = inner

    async def rooms(self) -> list[str]:
        return await self.inner.rooms()

    async def view(self, room: str) -> fo.RoomView:
        return await self.inner.view(room)

    async def dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        log.info("dry run: would dispatch agent %s to room %s", agent_name, room)
        return DRY_RUN_DISPATCH

    async def delete_dispatch(self, room: str, dispatch_id: str) -> None:
        log.info("dry run: would delete dispatch %s of room %s", dispatch_id, room)

    async def remove_participant(self, room: str, identity: str) -> None:
        log.info("dry run: would remove participant %s from room %s", identity, room)

    async def close(self) -> None:
        await self.inner.close()


DRY_RUN_DISPATCH: Final = "dry-run"


def _no_event(type_: str, reason: str, message: str) -> None:
    pass


# --- per VoiceAgent -----------------------------------------------------------------------


@dataclass(frozen=True)
class FleetTarget:
    """What failover needs of one VoiceAgent. The secret is never printed."""

    namespace: str
    name: str
    agent_name: str
    url: str
    api_key: str
    api_secret: str = field(repr=False)
    enabled: bool = True

    # Cached: a hash of the secret, asked for on every webhook and every client release
    # (for each VoiceAgent), not worth computing each time.
    @cached_property
    def credentials(self) -> str:
        return secret_id(self.api_key, self.api_secret)

    @cached_property
    def deployment(self) -> tuple[str, str]:
        return (http_url(self.url), self.credentials)


@dataclass
class _State:
    target: FleetTarget
    cases: dict[tuple[str, str], fo.Case] = field(default_factory=dict)
    counted: set[tuple[str, str]] = field(default_factory=set)  # orphans counted
    view: fo.WorkerView = field(default_factory=fo.WorkerView)  # what each worker serves
    incoming: list[fo.Loss] = field(default_factory=list)
    suspects: dict[str, tuple[fo.WorkerRoom, float]] = field(default_factory=dict)
    absent: dict[tuple[str, str], float] = field(default_factory=dict)
    # Rooms whose agent ended the call on purpose while callers stayed (not orphans).
    ended: dict[str, float] = field(default_factory=dict)
    ended_pending: list[str] = field(default_factory=list)  # to record (webhook, vanish)
    # (room, lost agent identity) -> when its case closed: a later notice of the same dead
    # agent (LiveKit's participant_left ~20 s after a crash) is not a new loss, also when
    # the caller has hung up since (it would count an orphan and a `caller_gone`).
    settled: dict[tuple[str, str], float] = field(default_factory=dict)
    next_sweep: float = 0.0
    # (room, agent identity) this operator removed from a room (a dead or hung agent): its
    # `participant_left` (PARTICIPANT_REMOVED) is not the agent ending the call on purpose.
    evicted: dict[tuple[str, str], float] = field(default_factory=dict)
    # Rooms a caller joined (a webhook), watched each tick until an agent of ours comes:
    # room -> since when. A call LiveKit could not place is found here within seconds.
    watch: dict[str, float] = field(default_factory=dict)
    hung: list[str] = field(default_factory=list)  # hung worker pods to end (this tick)
    api_error: str = ""  # the LiveKit API's last failure, logged once until it recovers


def _key(s: _State) -> tuple[str, str]:
    return s.target.namespace, s.target.name


@dataclass(frozen=True)
class RoomsSnapshot:
    """A LiveKit deployment's rooms as one sweep read them, shared by its VoiceAgents."""

    at: float  # when the listing started
    names: frozenset[str]
    views: tuple[fo.RoomView, ...]
    # agent name -> the rooms with a dispatch of it: the only ones `orphans_from_sweep`
    # looks at for that agent, so each VoiceAgent judges its own rooms, not all of them.
    by_agent: Mapping[str, tuple[fo.RoomView, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, at: float, views: Sequence[fo.RoomView]) -> RoomsSnapshot:
        by_agent: dict[str, list[fo.RoomView]] = {}
        for v in views:
            for name in {d.agent_name for d in v.dispatches}:
                by_agent.setdefault(name, []).append(v)
        return cls(
            at,
            frozenset(v.room for v in views),
            tuple(views),
            {k: tuple(vs) for k, vs in by_agent.items()},
        )

    def dispatched(self, agent_name: str) -> tuple[fo.RoomView, ...]:
        return self.by_agent.get(agent_name, ())


class Failover:
    def __init__(
        self,
        kube: KubeApi,
        metrics: FailoverMetrics,
        policy: fo.Policy | None = None,
        sweep_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        rooms_factory: Callable[[str, str, str], Rooms] = LiveKitRooms,
        names: AgentNames | None = None,
        dry_run: bool = False,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.policy = policy or fo.Policy()
        self.sweep_seconds = sweep_seconds
        self.clock = clock
        self.dry_run = dry_run  # decide and log, write nothing (Settings.dry_run)
        self.rooms_factory: Callable[[str, str, str], Rooms] = (
            (lambda *args: DryRunRooms(rooms_factory(*args))) if dry_run else rooms_factory
        )
        self._states: dict[tuple[str, str], _State] = {}
        self._clients: dict[tuple[str, str], Rooms] = {}
        # (namespace, Secret name) -> its data; FleetTarget.deployment -> its rooms.
        self._secrets: TtlShared[tuple[str, str], SecretData] = TtlShared(
            clock, SECRET_RETRY_SECONDS
        )
        self._snapshots: TtlShared[tuple[str, str], RoomsSnapshot] = TtlShared(clock, TICK_SECONDS)
        self.names = names
        # VoiceAgents whose agent name another one holds (names.py): no failover for them.
        self._yielding: dict[tuple[str, str], str] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # Called with (namespace, name) when a webhook concerns that VoiceAgent: its loop
        # (fleet_loop.FleetLoop) looks at it at once rather than at its next due time.
        self.notify: Callable[[str, str], None] = lambda _ns, _name: None

    # --- what the webhook receiver needs ------------------------------------------------
    def known_credentials(self) -> dict[str, set[str]]:
        """API key -> secrets of every VoiceAgent with failover on."""
        out: dict[str, set[str]] = {}
        for s in self._states.values():
            if s.target.enabled:
                out.setdefault(s.target.api_key, set()).add(s.target.api_secret)
        return out

    async def on_webhook(self, event: Any, credentials: str) -> None:
        """A verified LiveKit webhook: a loss for the matching VoiceAgent, or a nudge."""
        p = event.participant
        agent_name = p.attributes.get(AGENT_NAME_ATTRIBUTE, "")
        for s in self._states.values():
            t = s.target
            if not t.enabled or t.credentials != credentials:
                continue
            if event.event == "participant_joined" and int(p.kind) in fo.CALLER_KINDS:
                s.watch.setdefault(event.room.name, self.clock())
                self.notify(*_key(s))
            if event.event == "room_finished" or agent_name == t.agent_name:
                loss = fo.loss_from_webhook(
                    event.event,
                    event.room.name,
                    int(p.kind),
                    p.identity,
                    dict(p.attributes),
                    int(p.disconnect_reason),
                    self.clock(),
                    p.joined_at_ms / 1000 if p.joined_at_ms else float(p.joined_at),
                )
                if (
                    fo.deliberate_leave(
                        event.event, int(p.kind), dict(p.attributes), int(p.disconnect_reason)
                    )
                    and (event.room.name, p.identity) not in s.evicted
                ):
                    s.ended_pending.append(event.room.name)
                if loss is not None:
                    log.info(
                        "%s/%s: agent %s left room %s (reason %d)",
                        t.namespace, t.name, p.identity, loss.room, p.disconnect_reason,
                    )  # fmt: skip
                    s.incoming.append(loss)
                self.notify(*_key(s))  # joins and room ends settle open cases sooner

    # --- the loop -----------------------------------------------------------------------
    async def configure(self, spec: VoiceAgentSpec) -> _State | None:
        """Refresh a VoiceAgent's target from its spec and its Secret (read every 30 s,
        once for all the VoiceAgents that use it)."""
        key = (spec.namespace, spec.name)
        s = self._states.get(key)
        secret = (spec.namespace, spec.livekit.credentialsSecret)
        if s is not None and s.target.url != spec.livekit.url:
            self._secrets.forget(secret)  # another deployment: its credentials as they are now
        try:
            data = await self._secrets.get(
                secret, lambda: self._read_secret(*secret), SECRET_REFRESH_SECONDS
            )
        except (KubeError, NoSecret):
            creds = None  # the previous credentials stay in use
        else:
            creds = credentials_of(data, spec)
        if creds is not None:
            if s is None:
                t = FleetTarget(
                    spec.namespace, spec.name, spec.agent_name, spec.livekit.url, *creds
                )
                s = self._states[key] = _State(t)
            elif (s.target.api_key, s.target.api_secret) != creds:
                s.target = replace(s.target, api_key=creds[0], api_secret=creds[1])
        if s is None:
            return None  # the reconciler reports a missing Secret as a condition
        before = s.target.deployment
        s.target = replace(
            s.target,
            agent_name=spec.agent_name,
            url=spec.livekit.url,
            enabled=spec.config.failover.enabled,
        )
        if s.target.deployment != before:
            self._release_clients()  # the previous deployment's client, if nobody else's
        if not s.target.enabled:
            s.cases.clear()
            s.incoming.clear()
            s.suspects.clear()
        return s

    async def _read_secret(self, namespace: str, name: str) -> SecretData:
        """One GET of a credentials Secret (shared through `self._secrets`)."""
        try:
            got = await asyncio.to_thread(self.kube.get, path("v1", "Secret", namespace, name))
        except KubeError as e:  # the message names the Secret, never its values
            log.warning("failover: cannot read the LiveKit Secret %s/%s: %s", namespace, name, e)
            raise
        if got is None:
            raise NoSecret(f"{namespace}/{name}")  # the reconciler reports it as a condition
        return SecretData(got.get("data") or {})

    def forget(self, namespace: str, name: str) -> None:
        """The VoiceAgent is gone (or its failover stands down): its state, its metrics,
        and the LiveKit client when no other VoiceAgent uses it."""
        gone = self._states.pop((namespace, name), None)
        self._yielding.pop((namespace, name), None)
        self.metrics.forget(namespace, name)
        if gone is not None:  # (each release looks at every VoiceAgent's deployment)
            self._release_clients()

    def client(self, t: FleetTarget) -> Rooms:
        c = self._clients.get(t.deployment)
        if c is None:
            c = self._clients[t.deployment] = self.rooms_factory(t.url, t.api_key, t.api_secret)
        return c

    def _release_clients(self) -> None:
        """Close the LiveKit clients no VoiceAgent uses any more (each holds an HTTP
        session and its connections): after a VoiceAgent goes, or moves to another
        LiveKit deployment or credentials. Closed in the background: callers are sync."""
        used = {s.target.deployment for s in self._states.values()}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (never in the operator): `close` takes them all at the end
        for key in [k for k in self._clients if k not in used]:
            client = self._clients.pop(key)
            self._snapshots.forget(key)
            task = loop.create_task(self._close_client(client))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_client(client: Rooms) -> None:
        try:
            await client.close()
        except Exception as e:  # a client that fails to close is still dropped
            log.warning("failover: closing a LiveKit client: %s", e)

    @property
    def clients(self) -> int:
        """LiveKit clients open now (one per LiveKit deployment and credentials in use)."""
        return len(self._clients)

    async def close(self) -> None:
        self._secrets.clear()
        self._snapshots.clear()
        for c in self._clients.values():
            await c.close()
        self._clients.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _yields(self, spec: VoiceAgentSpec) -> bool:
        """Another VoiceAgent holds this one's agent name on its LiveKit server: this one's
        failover acts on nothing (the holder's does), said once."""
        key = (spec.namespace, spec.name)
        holder = (
            self.names.rival_of(spec.namespace, spec.name, spec.livekit.url, spec.agent_name)
            if self.names is not None
            else None
        )
        if holder is None:
            if self._yielding.pop(key, None) is not None:
                log.info("failover %s/%s: agent name %r is this VoiceAgent's again", *key,
                         spec.agent_name)  # fmt: skip
            return False
        if self._yielding.get(key) != holder.ref:
            log.warning(
                "failover %s/%s: off; agent name %r on %s belongs to VoiceAgent %s",
                *key, spec.agent_name, holder.url, holder.ref,
            )  # fmt: skip
            self._states.pop(key, None)  # no webhook, sweep or dispatch acts for it
            self.metrics.forget(*key)
            self._release_clients()
            self._yielding[key] = holder.ref
        return True

    async def tick(
        self,
        spec: VoiceAgentSpec,
        pods: Sequence[WorkerPod],
        readings: Mapping[str, Reading],
        post: PostEvent,
    ) -> float:
        """One look at one VoiceAgent; returns how long it may wait for the next if nothing
        wakes it (a second while a case is open, else until the next sweep)."""
        if self._yields(spec):
            return YIELD_RECHECK_SECONDS
        if self.dry_run:  # Events are writes too: the log says what happened
            post = _no_event
        s = await self.configure(spec)
        if s is None or not s.target.enabled:
            return self.sweep_seconds
        now = self.clock()
        self._watch_workers(s, pods, readings, now)
        await self._end_hung(s, post)
        reports = {pod: r.report for pod, r in readings.items()}
        free = free_slots(samples_of(pods, reports, spec.max_per_worker))
        rooms = self.client(s.target)
        try:
            await self._confirm_suspects(s, rooms, now)
            await self._record_ended(s, rooms, now)
            await self._watch_joins(s, rooms, now, free)
            if now >= s.next_sweep:
                # Set first: a sweep LiveKit fails is tried again a period later. Every
                # second would be once a second per VoiceAgent against one LiveKit that is
                # down (1,000 of them: 1,000 ticks a second for nothing).
                s.next_sweep = now + self.sweep_seconds
                await self._sweep(s, rooms, now, free)
            for loss in s.incoming:
                self._open(s, loss)
            s.incoming.clear()
            await self._step_cases(s, rooms, post, free)
        except (lkapi.TwirpError, aiohttp.ClientError, OSError, TimeoutError) as e:
            # LiveKit unreachable or failing: everything stays open for the next tick.
            # Said once (and again if the error changes), not every second.
            if str(e) != s.api_error:
                log.warning("failover %s/%s: LiveKit API: %s; retrying", *_key(s), e)
            s.api_error = str(e)
        else:
            if s.api_error:
                log.info("failover %s/%s: LiveKit API answers again", *_key(s))
                s.api_error = ""
        t = s.target
        self.metrics.waiting.labels(t.namespace, t.name).set(self.waiting(t.namespace, t.name))
        if s.cases or s.suspects or s.incoming or s.ended_pending or s.watch:
            return TICK_SECONDS  # something open: each second (also while LiveKit fails)
        return max(TICK_SECONDS, s.next_sweep - self.clock())

    def waiting(self, namespace: str, name: str) -> int:
        """Calls of this VoiceAgent waiting for a free worker slot (demand to scale for)."""
        s = self._states.get((namespace, name))
        if s is None:
            return 0
        return sum(1 for c in s.cases.values() if c.outcome is None and c.waiting_since)

    def observe(
        self, namespace: str, name: str, pods: Sequence[WorkerPod], readings: Mapping[str, Reading]
    ) -> None:
        """The feed has new readings: what each worker serves is recorded now, not at the
        next tick. A call that starts and whose worker dies between two ticks (a tick
        waiting on LiveKit, a busy event loop) would otherwise never be in the view: the
        tick after would find the refusal, with nothing recorded to lose, and only LiveKit's
        webhook ~20 s later would tell."""
        s = self._states.get((namespace, name))
        if s is not None and s.target.enabled:
            self._watch_workers(s, pods, readings, self.clock())

    def _watch_workers(
        self, s: _State, pods: Sequence[WorkerPod], readings: Mapping[str, Reading], now: float
    ) -> None:
        seen = fo.watch_workers(s.view, pods, readings, s.target.agent_name, now)
        s.view = seen.view
        s.hung = list(seen.hung)
        s.incoming.extend(seen.losses)
        for suspect in seen.vanished:
            if suspect.room not in s.ended:
                s.suspects.setdefault(suspect.room, (suspect, now))
        for room in seen.served:  # served again: a new call in a reused room
            s.ended.pop(room, None)

    async def _end_hung(self, s: _State, post: PostEvent) -> None:
        """A hung worker is ended before its calls are dispatched again: it stays registered
        with LiveKit (its connection is open), and LiveKit offers it new jobs, waits 10 s
        for an answer that never comes, then drops the job (livekit-server
        `AssignJobTimeout`, no retry). Once its process is gone, its connection closes and
        LiveKit retries a pending offer on another worker. The pod is deleted with a short
        grace (SIGTERM cannot reach a stopped process; the kubelet's SIGKILL does) instead
        of waiting ~2 minutes for the liveness probe."""
        ns = s.target.namespace
        for pod in s.hung:
            if self.dry_run:
                log.info("dry run: failover %s/%s would end hung worker %s", *_key(s), pod)
                s.view = s.view.ended(pod)
                continue
            try:
                await asyncio.to_thread(
                    self.kube.delete, path("v1", "Pod", ns, pod), HUNG_POD_GRACE_SECONDS
                )
            except Exception as e:  # the API may be away: the next tick tries again
                log.warning("failover %s/%s: cannot end hung worker %s: %s", *_key(s), pod, e)
                continue
            s.view = s.view.ended(pod)
            log.warning("failover %s/%s: worker %s hung (not ready, no answer); ended it",
                        *_key(s), pod)  # fmt: skip
            post("Warning", "WorkerHung", f"worker pod {pod} hung (not ready, no answer to "
                 "/sessions): deleted it; its calls go to other workers")  # fmt: skip
        s.hung = []

    async def _confirm_suspects(self, s: _State, rooms: Rooms, now: float) -> None:
        for room, (suspect, noticed) in list(s.suspects.items()):
            if (room, s.target.agent_name) in s.cases:
                del s.suspects[room]
                continue
            verdict, loss = fo.judge_vanished(
                suspect, await rooms.view(room), noticed, now, self.policy
            )
            if loss is not None:
                s.incoming.append(loss)
            elif verdict == "ended":
                s.ended_pending.append(room)
            if verdict != "wait" or now - noticed > self.policy.suspect_seconds:
                del s.suspects[room]

    async def _record_ended(self, s: _State, rooms: Rooms, now: float) -> None:
        """The agent ended its call on purpose: remember it, and delete its dispatch in
        LiveKit, so that neither this sweep nor one after an operator restart takes the
        room (callers still in it) for an orphan."""
        while s.ended_pending:
            room = s.ended_pending[0]
            view = await rooms.view(room)
            name = s.target.agent_name
            if view.exists and not view.agents(name):
                for d in view.dispatches_of(name):
                    if d.id:
                        await rooms.delete_dispatch(room, d.id)
                s.ended[room] = now
                log.info(
                    "%s/%s: the agent ended the call in room %s on purpose",
                    s.target.namespace, s.target.name, room,
                )  # fmt: skip
            s.ended_pending.pop(0)

    def _served(self, s: _State) -> set[str]:
        return s.view.rooms()

    async def _watch_joins(self, s: _State, rooms: Rooms, now: float, free: int) -> None:
        """Rooms a caller joined, until an agent of ours is there: one LiveKit could not
        place (every worker full) becomes an `unplaced` case at once, not at the sweep."""
        name = s.target.agent_name
        for room, since in list(s.watch.items()):
            view = await rooms.view(room)
            loss = fo.unplaced(view, name, now, free, self._served(s), self.policy)
            if loss is not None:
                s.incoming.append(loss)
            mine = view.dispatches_of(name)
            settled = not view.exists or not view.callers() or bool(view.agents(name))
            # Not ours (no dispatch of this agent after a moment), placed, or old enough
            # for the sweep to take over.
            if (
                loss is not None
                or settled
                or (not mine and now - since >= self.policy.place_seconds)
                or now - since >= self.policy.join_timeout_seconds
            ):
                del s.watch[room]

    async def _snapshot(self, rooms: Rooms) -> RoomsSnapshot:
        """Every room of a deployment with its participants and dispatches: 1 + 3 x rooms
        LiveKit API calls, made once per deployment and sweep period (`self._snapshots`)."""
        at = self.clock()
        names = await rooms.rooms()
        return RoomsSnapshot.of(at, [await rooms.view(r) for r in names])

    async def _sweep(self, s: _State, rooms: Rooms, now: float, free: int = 1) -> None:
        name = s.target.agent_name
        snap = await self._snapshots.get(
            s.target.deployment, lambda: self._snapshot(rooms), self.sweep_seconds
        )
        # A room ended on purpose is remembered while it exists (and when it was ended
        # after the snapshot was taken: the snapshot may not list it yet).
        s.ended = {r: t for r, t in s.ended.items() if r in snap.names or t >= snap.at}
        views = [v for v in snap.dispatched(name) if v.room not in s.ended]
        # Judged as of the snapshot: "no agent for 5 s" and "no pending dispatch" are about
        # the rooms as they were when read.
        losses, s.absent = fo.orphans_from_sweep(views, [name], s.absent, snap.at, self.policy)
        # A call LiveKit could not place, found by the sweep (after an operator restart, or
        # with webhooks off), is read afresh too.
        found = {x.room for x in losses}
        served = self._served(s)
        unplaced = [
            v.room
            for v in views
            if v.room not in found and fo.unplaced(v, name, snap.at, free, served, self.policy)
        ]
        for view in [await rooms.view(r) for r in unplaced]:
            loss = fo.unplaced(view, name, now, free, served, self.policy)
            if loss is not None:
                s.incoming.append(loss)
        if losses:
            # The snapshot may be up to a period old: a room it shows orphaned is read again
            # (rare: only such rooms) before a case is opened, so that a recovery since (by
            # the worker view or a webhook) is not counted as a second orphan.
            fresh = [await rooms.view(x.room) for x in losses]
            losses, absent = fo.orphans_from_sweep(fresh, [name], s.absent, now, self.policy)
            for view in fresh:
                if (view.room, name) not in absent:
                    s.absent.pop((view.room, name), None)
        s.incoming += losses

    def _open(self, s: _State, loss: fo.Loss) -> None:
        if loss.agent_name != s.target.agent_name or loss.room in s.ended:
            return
        if loss.lost_identity and (loss.room, loss.lost_identity) in s.settled:
            return  # a late notice of a loss already handled
        if not loss.lost_identity and (loss.room, "") in s.settled:
            return  # given up on lately: not again at every sweep
        case = fo.merge_loss(s.cases, loss)
        if case is not None:
            s.cases[case.key] = case
            s.counted.discard(case.key)

    async def _step_cases(
        self, s: _State, rooms: Rooms, post: PostEvent, free: int | None = None
    ) -> None:
        """Each open case against its room; `free` worker slots are shared out, oldest case
        first, so that one freed slot is not offered to every waiting call at once."""
        t = s.target
        for key, case in sorted(s.cases.items(), key=lambda kv: kv[1].loss.at):
            if case.outcome is not None:
                continue
            view = await rooms.view(case.loss.room)
            now = self.clock()
            action = fo.step(case, view, now, self.policy, free)
            first = key not in s.counted
            if first and action.case.outcome != "ended":
                s.counted.add(key)
                unplaced = case.loss.source == "unplaced"
                counter = self.metrics.unplaced.labels(t.namespace, t.name)
                if not unplaced:
                    counter = self.metrics.orphans.labels(t.namespace, t.name, case.loss.source)
                counter.inc()
                log.info(
                    "%s/%s: %s in room %s%s",
                    t.namespace, t.name,
                    "LiveKit could not place the call" if unplaced else "session orphaned",
                    case.loss.room,
                    "" if unplaced else f" (noticed by {case.loss.source})",
                )  # fmt: skip
            if action.case.waiting_since and not case.waiting_since:
                # Said once per call, not at every tick it waits.
                waiting = self.waiting(t.namespace, t.name) + 1
                post(
                    "Warning",
                    "WaitingForCapacity",
                    f"room {case.loss.room}: no worker has a free slot; the call waits for "
                    f"one ({waiting} waiting)",
                )
                log.info(
                    "%s/%s: room %s waits for a free worker slot (%d waiting)",
                    t.namespace, t.name, case.loss.room, waiting,
                )  # fmt: skip
            if action.kind == "dispatch":
                if free is not None:
                    free -= 1
                if action.evict:
                    # The lost agent still sits in the room (dead, or hung): out first, so
                    # the caller never has two agents.
                    s.evicted[(case.loss.room, action.evict)] = now
                    await rooms.remove_participant(case.loss.room, action.evict)
                    log.info(
                        "%s/%s: removed the lost agent %s from room %s",
                        t.namespace, t.name, action.evict, case.loss.room,
                    )  # fmt: skip
                metadata = fo.dispatch_metadata(case, view)
                # Recorded first: a dispatch whose answer is lost may still have landed.
                s.cases[key] = action.case
                dispatch_id = await rooms.dispatch(case.loss.room, t.agent_name, metadata)
                log.info(
                    "%s/%s: dispatched %s to room %s (%s; %s)",
                    t.namespace, t.name, t.agent_name, case.loss.room, dispatch_id, action.reason,
                )  # fmt: skip
                continue
            s.cases[key] = action.case
            if action.kind == "done":
                self._finish(s, action, view, post, counted=key in s.counted)

    def _finish(
        self, s: _State, action: fo.Action, view: fo.RoomView, post: PostEvent, counted: bool
    ) -> None:
        t, case = s.target, action.case
        outcome = case.outcome
        del s.cases[case.key]
        s.counted.discard(case.key)
        now = self.clock()
        if case.loss.lost_identity:
            s.settled[(case.loss.room, case.loss.lost_identity)] = now
        s.settled = {k: at for k, at in s.settled.items() if now - at < SETTLED_SECONDS}
        s.evicted = {k: at for k, at in s.evicted.items() if now - at < SETTLED_SECONDS}
        if outcome == "gave_up" and not case.loss.lost_identity:
            s.settled[(case.loss.room, "")] = now
        if outcome == "ended" or not counted:
            log.debug("%s/%s: room %s: %s", t.namespace, t.name, case.loss.room, action.reason)
            return
        room = case.loss.room
        if case.loss.source == "unplaced":
            # Not a failover: no agent was lost. Said once, when the call has its agent.
            if outcome == "redispatched":
                new = fo.joined_after(view, case)
                took = f" {max(0.0, new.joined_at - case.loss.at):.1f}s" if new else ""
                post(
                    "Normal",
                    "CallPlaced",
                    f"room {room}: a call LiveKit could not place (no free worker slot) got "
                    f"its agent{took} after it was noticed",
                )
            log.info(
                "%s/%s: room %s: unplaced call %s (%s)",
                t.namespace,
                t.name,
                room,
                outcome,
                action.reason,
            )
            return
        self.metrics.failovers.labels(t.namespace, t.name, outcome).inc()
        if outcome == "redispatched":
            new = fo.joined_after(view, case)
            latency = max(0.0, new.joined_at - case.loss.at) if new else None
            if latency is not None:
                self.metrics.latency.labels(t.namespace, t.name).observe(latency)
            took = f" in {latency:.1f}s" if latency is not None else ""
            post(
                "Normal",
                "FailedOver",
                f"room {room}: agent lost (noticed by {case.loss.source}); a new agent "
                f"joined{took} after {case.attempts} dispatch(es)",
            )
        elif outcome == "gave_up":
            post("Warning", "FailoverFailed", f"room {room}: {action.reason}")
        else:
            post(
                "Normal",
                "FailoverSkipped",
                f"room {room}: agent lost (noticed by {case.loss.source}) but {action.reason}",
            )
        log.info("%s/%s: room %s: %s (%s)", t.namespace, t.name, room, outcome, action.reason)


def webhook_server(failover: Failover, label: ActiveLabel | NoActiveLabel) -> WebhookServer:
    """The LiveKit webhook receiver: verified events go to failover; a standby replica
    (HA) answers 503 so that LiveKit retries at the active one."""
    return WebhookServer(
        WebhookVerifier(failover.known_credentials),
        failover.on_webhook,
        lambda result: failover.metrics.webhooks.labels(result).inc(),
        lambda: label.standing_by,
    )


async def start_webhooks(failover: Failover, server: WebhookServer, host: str, port: int) -> None:
    for result in RESULTS:  # every series exists from the start (rates need a zero)
        failover.metrics.webhooks.labels(result)
    if port:
        try:
            await server.start(host, port)
        except OSError as e:  # the rest of the operator must run; the sweep covers
            log.error("cannot serve LiveKit webhooks on %s:%d: %s", host, port, e)
