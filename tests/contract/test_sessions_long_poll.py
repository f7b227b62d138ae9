"""The contract's `/sessions` long poll, without a server: the version digest, the query
parameters both sides use, the thread-safe notifier and the waiting loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from voicefleet_contract.sessions import (
    MAX_WAIT_SECONDS,
    ChangeNotifier,
    LongPoll,
    LongPollLimit,
    RoomSession,
    SessionsReport,
    authorized,
    bearer,
    held,
    parse_long_poll,
    parse_sessions,
    query_string,
    report_version,
    serve_long_poll,
    with_version,
)


def test_the_version_is_a_digest_of_the_content_only() -> None:
    rooms = (RoomSession("r", "j", 1.5, "agent"),)
    a = SessionsReport(1, 4, rooms=rooms).to_dict()
    b = SessionsReport(1, 4, rooms=rooms).to_dict()
    assert a["version"] == b["version"] == report_version(a)
    assert report_version({**a, "version": "anything"}) == a["version"]  # itself excluded
    assert SessionsReport(1, 4, draining=True, rooms=rooms).to_dict()["version"] != a["version"]
    moved = (RoomSession("r", "j", 2.5, "agent"),)  # the agent joined: startedAt moved
    assert SessionsReport(1, 4, rooms=moved).to_dict()["version"] != a["version"]
    assert parse_sessions(a).version == a["version"]  # the client keeps what it was sent
    body: dict[str, Any] = {"activeSessions": 0, "capacity": 1, "rooms": []}
    assert with_version(body) is body and body["version"] == report_version(body)
    with pytest.raises(ValueError, match="version"):
        parse_sessions({"activeSessions": 0, "capacity": 1, "version": 3})


def test_parse_long_poll() -> None:
    assert parse_long_poll({}) == LongPoll(None, 0.0)  # a plain read: at once
    assert parse_long_poll({"since": ""}) == LongPoll(None, 0.0)
    assert parse_long_poll({"since": "v1"}) == LongPoll("v1", MAX_WAIT_SECONDS / 2)
    assert parse_long_poll({"since": "v1", "wait": "2.5"}) == LongPoll("v1", 2.5)
    assert parse_long_poll({"since": "v1", "wait": "0"}) == LongPoll("v1", 0.0)
    assert parse_long_poll({"wait": "60"}) == LongPoll(None, 60.0)
    for bad in ("abc", "1000", "-1", "nan", "inf", "60.5"):
        with pytest.raises(ValueError, match=r"^wait "):
            parse_long_poll({"since": "v1", "wait": bad})


def test_query_string_round_trips_through_parse_long_poll() -> None:
    assert query_string(None, 5) == "" and query_string("", 5) == ""
    q = query_string("0123abcd", 12.5)
    assert q == "?since=0123abcd&wait=12.5"
    assert parse_long_poll(dict(parse_qsl(urlsplit(q).query))) == LongPoll("0123abcd", 12.5)


class WatchedNotifier(ChangeNotifier):
    """`waiting` is set as a waiter registers (it does before it next yields)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        self.waiting.set()
        await super().wait(timeout)


async def test_notifier_wakes_a_waiter_from_another_thread() -> None:
    notifier = WatchedNotifier()
    waiter = asyncio.ensure_future(notifier.wait(5))
    await asyncio.wait_for(notifier.waiting.wait(), 5)
    started = time.monotonic()
    threading.Thread(target=notifier.notify).start()
    await asyncio.wait_for(waiter, 4)
    assert time.monotonic() - started < 4
    assert not notifier._waiters  # nothing left behind
    await notifier.wait(0.01)  # no notify: returns at the timeout


class Source:
    def __init__(self) -> None:
        self.active = 0

    def __call__(self) -> dict[str, Any]:
        return {"activeSessions": self.active, "capacity": 4, "rooms": []}


async def test_serve_long_poll_answers_on_change_or_at_the_deadline() -> None:
    src, notifier = Source(), WatchedNotifier()
    first = await serve_long_poll(src, notifier, LongPoll(None, 30))  # no since: at once
    assert first["activeSessions"] == 0 and first["version"] == report_version(first)
    stale = await serve_long_poll(src, notifier, LongPoll("not-it", 30))  # differs: at once
    assert stale == first

    same = await serve_long_poll(src, notifier, LongPoll(first["version"], 0.05))
    assert same == first  # the deadline: the same report

    notifier.waiting.clear()
    held = asyncio.ensure_future(serve_long_poll(src, notifier, LongPoll(first["version"], 5)))
    await asyncio.wait_for(notifier.waiting.wait(), 5)
    notifier.waiting.clear()
    notifier.notify()  # nothing changed: it renders again and goes on waiting
    await asyncio.wait_for(notifier.waiting.wait(), 5)
    assert not held.done()
    src.active = 1
    notifier.notify()
    changed = await asyncio.wait_for(held, 4)
    assert changed["activeSessions"] == 1 and changed["version"] != first["version"]


@pytest.mark.parametrize(
    ("header", "token", "ok"),
    [
        (None, None, True),  # no token on the worker: open
        (None, "t0ken", False),
        ("", "t0ken", False),
        ("Bearer t0ken", "t0ken", True),
        ("Bearer  t0ken ", "t0ken", True),
        ("bearer t0ken", "t0ken", False),
        ("Basic t0ken", "t0ken", False),
        ("Bearer t0ke", "t0ken", False),
        ("Bearer t0kenX", "t0ken", False),
    ],
)
def test_authorized(header: str | None, token: str | None, ok: bool) -> None:
    assert authorized(header, token) is ok
    assert authorized(bearer("abc"), "abc")


def test_long_poll_limit_counts_only_waiting_requests() -> None:
    limit = LongPollLimit(1)
    with limit.hold(LongPoll("v1", 20)) as first:
        assert first and limit.held == 1
        with limit.hold(LongPoll("v1", 20)) as second:
            assert not second  # answered at once
        with limit.hold(LongPoll(None, 0)) as plain:
            assert plain  # a plain read never waits, never counts
        assert limit.held == 1 and limit.refused == 1
    assert limit.held == 0
    with limit.hold(LongPoll("v1", 20)) as again:
        assert again


@pytest.mark.parametrize(
    ("since", "version", "elapsed", "was_held"),
    [
        (None, "v1", 0.01, True),  # a first read: nothing to hold
        ("v1", "v2", 0.01, True),  # a change, at once
        ("v1", "v1", 20.0, True),  # the deadline, unchanged
        ("v1", "v1", 0.01, False),  # unchanged at once: the worker did not hold it
    ],
)
def test_held(since: str | None, version: str, elapsed: float, was_held: bool) -> None:
    assert held(since, version, elapsed, 20.0) is was_held
