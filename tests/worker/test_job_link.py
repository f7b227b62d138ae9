"""The job link: what a job process sends reaches the worker process's one registry and
metrics; bad messages are refused with the field named; a job process that dies mid-call
ends its sessions with outcome `error`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from voicefleet_contract import metrics as spec
from voicefleet_worker.job_link import (
    JobLinkServer,
    LinkError,
    ParentLink,
    RemoteSessions,
    apply,
    check_metric,
    decode,
    encode,
    remote_metrics,
)
from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.sessions import SessionRegistry


def fresh() -> tuple[SessionRegistry, WorkerMetrics]:
    metrics = WorkerMetrics(CollectorRegistry(), passthrough=False)
    return SessionRegistry(5, metrics), metrics


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


TURN = spec.WORKER_TURN_LATENCY.name
CALLS = spec.WORKER_TOOL_CALLS.name


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        ({"name": "voicefleet_nope", "op": "inc"}, "name:"),
        ({"op": "inc"}, "name:"),
        ({"name": TURN, "op": "inc"}, "op:"),  # histograms only observe
        ({"name": CALLS, "op": "set", "labels": {}}, "op:"),  # counters only inc
        ({"name": CALLS, "op": "inc", "labels": {"tool": "x"}}, "labels:"),
        ({"name": CALLS, "op": "inc", "labels": {"tool": "x", "outcome": 3}}, "labels:"),
        ({"name": TURN, "op": "observe", "value": "fast"}, "value:"),
        ({"name": TURN, "op": "observe", "value": float("nan")}, "value:"),
        ({"name": TURN, "op": "observe", "value": True}, "value:"),
        (
            {"name": CALLS, "op": "inc", "labels": {"tool": "x", "outcome": "ok"}, "value": -1},
            "value:",
        ),
    ],
)
def test_bad_metric_messages_name_the_field(msg: dict[str, Any], field: str) -> None:
    with pytest.raises(LinkError, match=f"^{field}"):
        check_metric(msg)


@pytest.mark.parametrize(
    ("line", "field"),
    [(b"{nope\n", "not JSON"), (b"[1]\n", "not a JSON object")],
)
def test_bad_lines(line: bytes, field: str) -> None:
    with pytest.raises(LinkError, match=field):
        decode(line)


def test_unknown_kind_and_missing_job_are_refused() -> None:
    sessions, metrics = fresh()
    with pytest.raises(LinkError, match=r"^k:"):
        apply({"k": "bogus"}, sessions, metrics, set())
    with pytest.raises(LinkError, match=r"^job:"):
        apply({"k": "start", "room": "r"}, sessions, metrics, set())
    assert sessions.count() == 0


def test_messages_apply_to_the_registry_and_metrics() -> None:
    sessions, metrics = fresh()
    jobs: set[str] = set()
    for msg in (
        {"k": "start", "job": "J1", "room": "room-a", "participant": "agent-J1"},
        {"k": "joined", "job": "J1"},
        {"k": "m", "name": TURN, "labels": {}, "op": "observe", "value": 0.3},
        {"k": "m", "name": CALLS, "labels": {"tool": "t", "outcome": "ok"}, "op": "inc"},
    ):
        apply(decode(encode(msg)), sessions, metrics, jobs)
    report = sessions.report()
    assert [(r.room, r.jobId, r.participant) for r in report.rooms] == [
        ("room-a", "J1", "agent-J1")
    ]
    assert jobs == {"J1"}
    assert value(metrics, TURN + "_count") == 1.0
    assert value(metrics, CALLS, tool="t", outcome="ok") == 1.0
    apply({"k": "end", "job": "J1", "outcome": "caller_gone"}, sessions, metrics, jobs)
    assert sessions.count() == 0 and jobs == set()
    ended = spec.WORKER_SESSIONS_ENDED.name
    assert value(metrics, ended, outcome="caller_gone") == 1.0


async def poll(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_job_process_reports_through_the_socket_and_a_dead_one_ends_in_error() -> None:
    sessions, metrics = fresh()
    server = JobLinkServer(sessions, metrics)
    path = await server.start()
    try:
        # what a job process holds (blocking sends: run them off the loop, as a process
        # would be)
        link = ParentLink(path)
        remote = remote_metrics(link)
        job = RemoteSessions(link)

        def call() -> None:
            job.start("J1", "room-a", "agent-J1")
            remote.turn_latency.observe(0.25)
            remote.tool_calls.labels(tool="t", outcome="timeout").inc()
            remote.livekit_node.clear()
            job.start("J2", "room-b")
            job.end("J2", "completed")

        await asyncio.to_thread(call)
        await poll(lambda: value(metrics, TURN + "_count") == 1.0)
        assert value(metrics, CALLS, tool="t", outcome="timeout") == 1.0
        assert [r.room for r in sessions.report().rooms] == ["room-a"]
        ended = spec.WORKER_SESSIONS_ENDED.name
        assert value(metrics, ended, outcome="completed") == 1.0

        link.close()  # the process dies with J1 still in its room
        await poll(lambda: sessions.count() == 0)
        assert value(metrics, ended, outcome="error") == 1.0
    finally:
        await server.aclose()


async def test_a_message_the_worker_refuses_does_not_cut_the_link() -> None:
    sessions, metrics = fresh()
    server = JobLinkServer(sessions, metrics)
    path = await server.start()
    try:
        link = ParentLink(path)

        def send() -> None:
            link.send({"k": "m", "name": "voicefleet_nope", "op": "inc"})
            link.send({"k": "start", "job": "J1", "room": "room-a"})

        await asyncio.to_thread(send)
        await poll(lambda: sessions.count() == 1)
        link.close()
    finally:
        await server.aclose()


def test_a_lost_link_drops_messages_without_raising(tmp_path: Any) -> None:
    link = ParentLink(str(tmp_path / "absent.sock"))
    RemoteSessions(link).start("J1", "room-a")  # nothing listens: no exception
    remote_metrics(link).turn_latency.observe(1.0)
