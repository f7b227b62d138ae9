"""Every worker pod's `/sessions`, kept current by one long poll per pod, for the
autoscaler and failover alike.

Reading every worker every second costs a request per worker per second, twice (the
autoscaler and failover each read): at 1,000 workers that alone is more CPU than the
operator's budget. Instead the feed keeps one `GET /sessions?since=<version>&wait=<s>`
open per worker (the contract's long poll): the worker answers when its report changes (a
call starts or ends, a drain begins) or after `wait_seconds` with the same report. So an
idle fleet costs one request per worker per `wait_seconds`, and a change reaches the
operator as soon as the worker knows it, sooner than a once-a-second read would.

What a reading says:
- a report: the worker answered;
- no reading yet: the pod is new, its first read is in flight (the autoscaler leaves it
  out rather than guessing);
- an error (`refused`, `timeout`, `HTTP 500`, ...): the worker did not answer. A worker
  whose process dies drops the open request and the retry is refused at once, which
  failover takes as the process gone. A hung worker is noticed when its long poll times
  out (`wait_seconds` + 5 s at worst), or when its readiness probe fails.

A worker that does not long-poll (its report has no version, from an older image), or
that answers at once because it holds its limit of long polls already, is read once a
second, as before.

Each request carries the VoiceAgent's bearer token (`WorkerTokens`: its worker-keys
Secret), which workers require on `/sessions` when the operator runs with
`--sessions-auth` (the default); a 401 has the token read again at once.

Pods come from the pod watch (`upsert`, `remove`); consumers `subscribe` to a VoiceAgent
and are woken whenever one of its pods' readings or the pod set changes. A consumer may
also pass an `observer`, called at once on each change: a consumer that wakes later (it
was busy) sees only the latest readings, and a report a worker gave just before it died
(a call that began a moment before) would be gone by then, replaced by the refusal.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from voicefleet_contract import METRICS_PORT, WORKER_KEYS_TOKEN
from voicefleet_contract.sessions import (
    AUTH_HEADER,
    SESSIONS_PATH,
    SessionsReport,
    bearer,
    held,
    parse_sessions,
    query_string,
)

from .fleet import ChildNames, Reading, WorkerPod
from .kube import KubeApi, path
from .shared import TtlShared

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, VoiceAgent)
LONG_POLL_MARGIN_SECONDS = 5.0
NOT_READY_TIMEOUT_SECONDS = 1.0  # a not-ready worker's plain read: see SessionFeed
TOKEN_REFRESH_SECONDS = 300.0  # a worker-keys Secret is read again once this old
TOKEN_RETRY_SECONDS = 2.0  # after a failed read (or a 401: at once)


class Tokens(Protocol):
    async def get(self, namespace: str, va: str) -> str | None: ...

    def forget(self, namespace: str, va: str) -> None: ...


class NoTokens:
    async def get(self, namespace: str, va: str) -> str | None:
        return None

    def forget(self, namespace: str, va: str) -> None:
        pass


class WorkerTokens:
    """Each VoiceAgent's `/sessions` bearer token, from its worker-keys Secret: one read
    per VoiceAgent per `TOKEN_REFRESH_SECONDS`, shared by all its pods' long polls. The
    values are never printed."""

    def __init__(self, kube: KubeApi, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self._shared: TtlShared[Key, str | None] = TtlShared(clock, TOKEN_RETRY_SECONDS)

    async def get(self, namespace: str, va: str) -> str | None:
        return await self._shared.get(
            (namespace, va), lambda: self._read(namespace, va), TOKEN_REFRESH_SECONDS
        )

    def forget(self, namespace: str, va: str) -> None:
        self._shared.forget((namespace, va))

    async def _read(self, namespace: str, va: str) -> str | None:
        secret_path = path("v1", "Secret", namespace, ChildNames.of(va).keys)
        got = await asyncio.to_thread(self.kube.get, secret_path)
        raw = ((got or {}).get("data") or {}).get(WORKER_KEYS_TOKEN)
        return base64.b64decode(raw).decode().strip() or None if raw else None


@dataclass
class _Watch:
    pod: WorkerPod
    task: asyncio.Task[None] | None = None
    reading: Reading | None = None


@dataclass
class _Fleet:
    pods: dict[str, _Watch] = field(default_factory=dict)
    # Each subscriber's Event, and its observer (called on every change) if it has one.
    wakes: dict[asyncio.Event, Callable[[], None] | None] = field(default_factory=dict)
    # Calls LiveKit could not place (failover's count): demand the autoscaler adds.
    waiting: int = 0


def error_reason(e: BaseException) -> str:
    """Why a read failed. Only `refused` (ECONNREFUSED: the pod's address answers, nothing
    listens on the port) says the worker's process is gone; `unreachable` (no route, host
    down, DNS) and `timeout` may be the network between the operator and the node."""
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, aiohttp.ClientConnectorError):
        return "refused" if e.os_error.errno == errno.ECONNREFUSED else "unreachable"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ValueError):  # includes JSONDecodeError
        return f"bad response: {e}"
    return f"error: {type(e).__name__}"


class SessionFeed:
    def __init__(
        self,
        wait_seconds: float = 20.0,
        timeout: float = 2.0,
        retry_seconds: float = 1.0,
        port: int = METRICS_PORT,
        on_failure: Callable[[str, str, str], None] = lambda ns, va, reason: None,
        clock: Callable[[], float] = time.monotonic,
        tokens: Tokens | None = None,
    ) -> None:
        self.tokens: Tokens = tokens or NoTokens()
        self.wait_seconds = wait_seconds
        self.timeout = timeout  # to connect, and to answer a plain (non-waiting) read
        # ... and a not-ready worker's: the kubelet's probe (1 s timeout) missed it twice
        # already, so this read is the hang's second witness, and a call waits on it.
        self.not_ready_timeout = min(timeout, NOT_READY_TIMEOUT_SECONDS)
        self.retry_seconds = retry_seconds
        self.port = port
        self.on_failure = on_failure  # (namespace, VoiceAgent, reason) per failed read
        self.clock = clock
        self._fleets: dict[Key, _Fleet] = {}
        self._session: aiohttp.ClientSession | None = None

    # --- pods ---------------------------------------------------------------------------
    def upsert(self, namespace: str, va: str, pod: WorkerPod) -> None:
        """A worker pod was seen (added or changed)."""
        fleet = self._fleets.setdefault((namespace, va), _Fleet())
        w = fleet.pods.get(pod.name)
        if w is not None and w.pod == pod:
            return
        if w is None:
            w = fleet.pods[pod.name] = _Watch(pod)
        elif w.pod.ip != pod.ip or pod.restarts != w.pod.restarts or pod.ready != w.pod.ready:
            # A new address or a restarted container is a new process (what the old one
            # said is stale); a worker that just turned ready is read
            # afresh: a "refused" from before it listened would count it as full, and
            # every new worker would ask for one more (a runaway scale-up). One that
            # turned not ready (the kubelet's probe failed) is read afresh too, with a
            # plain read, not the open long poll: if it does not answer either, it hangs.
            self._stop(w)
            w.reading = None
        w.pod = pod
        if pod.ip and w.task is None:
            w.task = asyncio.create_task(
                self._watch(namespace, va, w), name=f"sessions {namespace}/{pod.name}"
            )
        elif not pod.ip:
            self._stop(w)
            w.reading = None
        self._wake(fleet)

    def remove(self, namespace: str, va: str, pod: str) -> None:
        """A worker pod is gone from the API."""
        fleet = self._fleets.get((namespace, va))
        if fleet is None or pod not in fleet.pods:
            return
        self._stop(fleet.pods.pop(pod))
        self._wake(fleet)
        self._drop_if_unused((namespace, va))

    def forget(self, namespace: str, va: str) -> None:
        """Drop every pod of this VoiceAgent: the pod watch that told of them has ended (the
        operator paused for a peer). A pod deleted while it stood by would never be
        removed, and would count as a full worker forever; the watch's fresh listing when
        it resumes adds back every pod that still exists."""
        fleet = self._fleets.get((namespace, va))
        if fleet is None:
            return
        for w in fleet.pods.values():
            self._stop(w)
        fleet.pods.clear()  # no wake: nothing should act on an empty fleet while pausing
        self._drop_if_unused((namespace, va))

    def voiceagents(self, namespace: str) -> list[str]:
        """The VoiceAgents of `namespace` whose pods the feed follows."""
        return [va for ns, va in self._fleets if ns == namespace]

    def pods(self, namespace: str, va: str) -> list[WorkerPod]:
        fleet = self._fleets.get((namespace, va))
        return [w.pod for w in fleet.pods.values()] if fleet else []

    def readings(self, namespace: str, va: str) -> dict[str, Reading]:
        """Pod name -> its latest reading; a pod not read yet is absent."""
        fleet = self._fleets.get((namespace, va))
        if fleet is None:
            return {}
        return {n: w.reading for n, w in fleet.pods.items() if w.reading is not None}

    # --- consumers ----------------------------------------------------------------------
    def subscribe(
        self, namespace: str, va: str, observer: Callable[[], None] | None = None
    ) -> asyncio.Event:
        """An Event set whenever this VoiceAgent's pods or their readings change (clear it
        before reading; then a change during the read is not lost). `observer`, if given,
        is called at once on each change, before the feed reads on: it sees every reading,
        not only the latest one when its consumer next wakes."""
        event = asyncio.Event()
        self._fleets.setdefault((namespace, va), _Fleet()).wakes[event] = observer
        return event

    def unsubscribe(self, namespace: str, va: str, event: asyncio.Event) -> None:
        fleet = self._fleets.get((namespace, va))
        if fleet is not None:
            fleet.wakes.pop(event, None)
            self._drop_if_unused((namespace, va))

    def set_waiting(self, namespace: str, va: str, calls: int) -> None:
        """Failover's count of this VoiceAgent's calls with no agent that LiveKit could not
        place; a change wakes the consumers (the autoscaler counts them as demand)."""
        fleet = self._fleets.get((namespace, va))
        if fleet is not None and fleet.waiting != calls:
            fleet.waiting = calls
            self._wake(fleet)

    def waiting(self, namespace: str, va: str) -> int:
        fleet = self._fleets.get((namespace, va))
        return fleet.waiting if fleet else 0

    def poke(self, namespace: str, va: str) -> None:
        """Wake this VoiceAgent's consumers (its Deployment or spec changed)."""
        fleet = self._fleets.get((namespace, va))
        if fleet is not None:
            self._wake(fleet)

    async def close(self) -> None:
        for fleet in self._fleets.values():
            for w in fleet.pods.values():
                self._stop(w)
        self._fleets.clear()
        if self._session is not None:
            await self._session.close()

    # --- inside -------------------------------------------------------------------------
    def _wake(self, fleet: _Fleet) -> None:
        for e, observer in list(fleet.wakes.items()):
            e.set()
            if observer is not None:
                try:
                    observer()
                except Exception:  # a consumer's bug must not stop the feed's reads
                    log.exception("a sessions feed observer failed")

    def _stop(self, w: _Watch) -> None:
        if w.task is not None:
            w.task.cancel()
            w.task = None

    def _drop_if_unused(self, key: Key) -> None:
        fleet = self._fleets.get(key)
        if fleet is not None and not fleet.pods and not fleet.wakes:
            del self._fleets[key]

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
            )
        return self._session

    async def _token(self, namespace: str, va: str) -> str | None:
        try:
            return await self.tokens.get(namespace, va)
        except Exception as e:  # the read goes without one; a 401 says so
            log.debug("worker token unreadable for %s/%s: %s", namespace, va, type(e).__name__)
            return None

    async def _read(
        self, ip: str, since: str | None, token: str | None = None, ready: bool = True
    ) -> SessionsReport:
        wait = self.wait_seconds if since else 0.0
        plain = self.timeout if ready else self.not_ready_timeout
        headers = {AUTH_HEADER: bearer(token)} if token else {}
        url = f"http://{ip}:{self.port}{SESSIONS_PATH}{query_string(since, wait)}"
        timeout = aiohttp.ClientTimeout(
            # A long poll's answer may come a little after `wait` from a busy worker (or a
            # node agent serving thousands): a margin, so that is not taken for a hang.
            total=None,
            sock_connect=plain,
            sock_read=wait + LONG_POLL_MARGIN_SECONDS if wait else plain,
        )
        async with self._http().get(url, timeout=timeout, headers=headers) as resp:
            if resp.status != 200:
                raise _HttpStatus(resp.status)
            return parse_sessions(json.loads(await resp.read()))

    async def _watch(self, namespace: str, va: str, w: _Watch) -> None:
        ip = w.pod.ip
        since: str | None = None
        retried = False
        while True:
            token = await self._token(namespace, va)
            started = time.monotonic()
            try:
                report = await self._read(ip, since, token, w.pod.ready)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, _HttpStatus) as e:
                reason = f"HTTP {e.status}" if isinstance(e, _HttpStatus) else error_reason(e)
                if isinstance(e, _HttpStatus) and e.status == 401:
                    self.tokens.forget(namespace, va)  # made or changed since: read it again
                if not retried and reason.startswith("error:"):
                    # The connection was dropped (a stale keep-alive, the worker's process
                    # died under an open long poll): ask again at once, the answer says
                    # which, and failover takes only a refused connection for a death.
                    since, retried = None, True
                    continue
                self._publish(namespace, va, w, Reading(None, reason, self.clock()))
                if w.pod.ready:  # a starting worker refusing connections is no failure
                    self.on_failure(namespace, va, reason.split(":")[0])
                since, retried = None, False
                await asyncio.sleep(self.retry_seconds)
                continue
            retried = False
            self._publish(namespace, va, w, Reading(report, "", self.clock()))
            elapsed = time.monotonic() - started
            if report.version and held(since, report.version, elapsed, self.wait_seconds):
                since = report.version
            else:
                # a worker without the long poll, or one that holds its limit of them
                # already (answered at once, unchanged): read it once a second
                since = report.version or None
                await asyncio.sleep(self.retry_seconds)

    def _publish(self, namespace: str, va: str, w: _Watch, reading: Reading) -> None:
        changed = not reading.same_as(w.reading)
        w.reading = reading
        if changed:
            fleet = self._fleets.get((namespace, va))
            if fleet is not None:
                self._wake(fleet)


class _HttpStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
