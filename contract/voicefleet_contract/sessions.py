"""The `/sessions` report a worker serves on its metrics port, and how the operator waits
for it to change. One format, parsed by both sides from here.

Long poll: the report carries a `version` (a digest of its content). A client that sends
`?since=<version>&wait=<seconds>` gets the answer when the report differs from that
version, or after `wait` seconds with the same report. The operator keeps one such request
open per worker, so an idle fleet costs one request per worker per `wait` seconds instead
of one per second, and a change (a call starting, a drain) reaches it at once. A worker that
ignores the parameters (an older one) answers at once: the client then reads it once a
second as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

SESSIONS_PATH: Final = "/sessions"
# Held long polls a worker keeps at once: the operator holds one per worker (one per
# replica during an HA handover); a request beyond them is answered at once, as if it had
# not asked to wait (the client then reads once a second, see `held`).
MAX_HELD_LONG_POLLS: Final = 8
SINCE_PARAM: Final = "since"  # the version the client already has
WAIT_PARAM: Final = "wait"  # how long the server may hold the request for a change
MAX_WAIT_SECONDS: Final = 60.0


@dataclass(frozen=True)
class RoomSession:
    room: str
    jobId: str
    startedAt: float = 0.0  # unix seconds
    participant: str = ""  # the agent's participant identity in the room


@dataclass(frozen=True)
class SessionsReport:
    activeSessions: int
    capacity: int
    draining: bool = False
    rooms: tuple[RoomSession, ...] = field(default=())
    version: str = ""  # "" from a worker that does not long-poll

    def to_dict(self) -> dict[str, Any]:
        """The body a worker serves, with its `version` computed from the content."""
        body = asdict(self)
        body["version"] = report_version(body)
        return body


def report_version(body: Mapping[str, Any]) -> str:
    """A digest of everything in a report but its version: equal reports, equal versions
    (also across a worker's restart, which is right: nothing the operator reads changed)."""
    content = {k: v for k, v in body.items() if k != "version"}
    raw = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def with_version(body: dict[str, Any]) -> dict[str, Any]:
    """`body` (a report as a dict) with its version set."""
    body["version"] = report_version(body)
    return body


def parse_sessions(data: Any) -> SessionsReport:
    """Validate a `/sessions` body; raise ValueError on anything malformed."""
    if not isinstance(data, dict):
        raise ValueError("sessions report must be an object")
    active, capacity = data.get("activeSessions"), data.get("capacity")
    if not isinstance(active, int) or isinstance(active, bool) or active < 0:
        raise ValueError("activeSessions must be a non-negative integer")
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
        raise ValueError("capacity must be a non-negative integer")
    rooms = []
    for r in data.get("rooms") or []:
        if not isinstance(r, dict) or not isinstance(r.get("room"), str):
            raise ValueError("rooms[] entries need a room name")
        rooms.append(
            RoomSession(
                room=r["room"],
                jobId=str(r.get("jobId", "")),
                startedAt=float(r.get("startedAt") or 0.0),
                participant=str(r.get("participant", "")),
            )
        )
    version = data.get("version", "")
    if not isinstance(version, str):
        raise ValueError("version must be a string")
    return SessionsReport(
        active, capacity, bool(data.get("draining", False)), tuple(rooms), version
    )


@dataclass(frozen=True)
class LongPoll:
    since: str | None  # None: answer at once
    wait: float  # seconds, 0..MAX_WAIT_SECONDS


def parse_long_poll(query: Mapping[str, str]) -> LongPoll:
    """`?since=&wait=` of a `/sessions` request; ValueError naming the parameter."""
    since = query.get(SINCE_PARAM) or None
    raw = query.get(WAIT_PARAM)
    if raw is None or raw == "":
        return LongPoll(since, 0.0 if since is None else MAX_WAIT_SECONDS / 2)
    try:
        wait = float(raw)
    except ValueError:
        raise ValueError(f"{WAIT_PARAM} must be a number of seconds, got {raw!r}") from None
    if not 0 <= wait <= MAX_WAIT_SECONDS:
        raise ValueError(f"{WAIT_PARAM} must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
    return LongPoll(since, wait)


def query_string(since: str | None, wait: float) -> str:
    """The client's side of `parse_long_poll`."""
    if not since:
        return ""
    return f"?{SINCE_PARAM}={since}&{WAIT_PARAM}={wait:g}"


class ChangeNotifier:
    """Wakes asyncio waiters when a report may have changed; `notify` is safe from any
    thread (jobs run in threads in the worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def notify(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, set()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_resolve, fut)

    async def wait(self, timeout: float) -> None:
        """Until the next `notify` or `timeout` seconds, whichever comes first."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(entry)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


AUTH_HEADER: Final = "Authorization"


def bearer(token: str) -> str:
    """The `Authorization` value a client sends."""
    return f"Bearer {token}"


def authorized(header: str | None, token: str | None) -> bool:
    """Whether a request's `Authorization` header carries `token` (always, when the
    worker has no token: `/sessions` is then open). Constant-time comparison."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


class LongPollLimit:
    """At most `limit` long polls held at once (a client holding many, by mistake or
    not, cannot pile up open requests on a worker). `hold()` is a context manager whose
    value says whether this request may wait; only the event loop's thread uses it."""

    def __init__(self, limit: int = MAX_HELD_LONG_POLLS) -> None:
        self.limit = limit
        self.held = 0
        self.refused = 0  # requests answered at once because the limit was reached

    @contextlib.contextmanager
    def hold(self, poll: LongPoll) -> Iterator[bool]:
        waits = poll.since is not None and poll.wait > 0
        if waits and self.held >= self.limit:
            self.refused += 1
            yield False
            return
        if waits:
            self.held += 1
        try:
            yield True
        finally:
            if waits:
                self.held -= 1


def held(poll_since: str | None, answer_version: str, elapsed: float, wait: float) -> bool:
    """Whether the server held a long poll as asked (the client's side of the limit): an
    unchanged answer that came well before `wait` was not held, and asking again at once
    would spin. Pure."""
    if not poll_since or answer_version != poll_since:
        return True
    return elapsed >= wait / 2


async def serve_long_poll(
    render: Callable[[], dict[str, Any]],
    notifier: ChangeNotifier,
    poll: LongPoll,
    limit: LongPollLimit | None = None,
) -> dict[str, Any]:
    """The body to answer with: at once if the report differs from `poll.since`, else as
    soon as it does, or at the deadline. `render` returns the current report as a dict.
    With `limit`, a request beyond its held long polls is answered at once."""
    if limit is not None:
        with limit.hold(poll) as may_wait:
            return await serve_long_poll(
                render, notifier, poll if may_wait else LongPoll(poll.since, 0.0)
            )
    deadline = time.monotonic() + poll.wait
    while True:
        body = with_version(render())
        remaining = deadline - time.monotonic()
        if poll.since is None or body["version"] != poll.since or remaining <= 0:
            return body
        await notifier.wait(remaining)
