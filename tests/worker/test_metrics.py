"""The metrics endpoint serves exactly the contract's worker metrics, and /sessions
parses with the contract's own parser."""

from __future__ import annotations

import json

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from voicefleet_contract import READY_PATH
from voicefleet_contract.metrics import WORKER_METRICS
from voicefleet_contract.sessions import parse_sessions
from voicefleet_worker.endpoint import MetricsServer, make_app
from voicefleet_worker.metrics import LIVEKIT_AGENTS_PREFIX, WorkerMetrics
from voicefleet_worker.sessions import JobEnd, SessionRegistry


def _families(text: str) -> dict[str, str]:
    """Our families (livekit-agents' own `lk_agents_*` pass through beside them)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith(LIVEKIT_AGENTS_PREFIX):
            continue
        name = fam.name + ("_total" if fam.type == "counter" else "")
        out[name] = fam.type
    return out


def test_metric_names_and_kinds_match_the_contract() -> None:
    from prometheus_client import generate_latest

    m = WorkerMetrics()
    fams = _families(generate_latest(m.registry).decode())
    assert fams == {s.name: s.kind for s in WORKER_METRICS}


def test_histogram_buckets_and_labels_from_specs() -> None:
    m = WorkerMetrics()
    for s in WORKER_METRICS:
        metric = m.by_name[s.name]
        assert tuple(metric._labelnames) == s.labels
        if s.kind == "histogram":
            assert tuple(metric._upper_bounds[:-1]) == tuple(float(b) for b in s.buckets)


def test_registry_counts_and_outcomes() -> None:
    m = WorkerMetrics()
    reg = SessionRegistry(3, m)
    reg.start("j1", "room-1", "agent-j1")
    reg.start("j2", "room-2")
    reg.update("j2", participant="agent-j2")
    before = reg.report().rooms[1].startedAt
    reg.joined("j2")
    assert reg.report().rooms[1].startedAt >= before
    assert reg.report().rooms[1].participant == "agent-j2"
    v = m.registry.get_sample_value
    assert v("voicefleet_worker_active_sessions") == 2
    assert v("voicefleet_worker_capacity_sessions") == 3
    assert reg.end("j1", "caller_gone") is not None
    assert reg.end("j1", "completed") is None  # the first outcome wins
    assert v("voicefleet_worker_sessions_ended_total", {"outcome": "caller_gone"}) == 1
    assert v("voicefleet_worker_sessions_ended_total", {"outcome": "completed"}) == 0
    reg.set_draining()
    assert reg.end_all("drain_timeout") == 1
    assert v("voicefleet_worker_sessions_ended_total", {"outcome": "drain_timeout"}) == 1
    assert v("voicefleet_worker_draining") == 1
    assert v("voicefleet_worker_sessions_started_total") == 2
    assert v("voicefleet_worker_session_duration_seconds_count") == 2


def test_a_closing_session_stays_listed_until_its_agent_has_left() -> None:
    """The failover loop takes a room that vanishes from /sessions while its agent is
    still in the LiveKit room for a crashed job: a session that closes (the caller hung
    up, the model failed) keeps its room listed until the job's shutdown callback, which
    livekit-agents runs after leaving the room."""
    m = WorkerMetrics()
    reg = SessionRegistry(2, m)
    reg.start("j1", "room-1", "agent-j1")
    ended: list[str] = []
    ending = JobEnd(reg, "j1", ended.append)
    ending.closing("caller_gone")
    ending.closing("error")  # a later close does not change the outcome
    assert [r.room for r in reg.report().rooms] == ["room-1"]
    assert reg.report().rooms[0].participant == "agent-j1"
    assert ended == []
    ending.left()
    ending.left()
    assert reg.report().rooms == ()
    assert ended == ["caller_gone"]
    v = m.registry.get_sample_value
    assert v("voicefleet_worker_sessions_ended_total", {"outcome": "caller_gone"}) == 1
    assert v("voicefleet_worker_sessions_ended_total", {"outcome": "error"}) == 0
    # a job that shuts down without a close (the room was deleted, the agent ended it)
    reg.start("j2", "room-2")
    JobEnd(reg, "j2").left()
    assert v("voicefleet_worker_sessions_ended_total", {"outcome": "completed"}) == 1


async def test_endpoint_serves_metrics_and_sessions() -> None:
    m = WorkerMetrics()
    reg = SessionRegistry(2, m)
    reg.start("job-a", "room-a", "agent-a")
    server = MetricsServer(make_app(m, reg), "127.0.0.1", 0)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/sessions") as r:
                assert r.status == 200
                report = parse_sessions(json.loads(await r.text()))
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
                text = await r.text()
    finally:
        await server.aclose()
    assert (report.activeSessions, report.capacity, report.draining) == (1, 2, False)
    assert [(x.room, x.jobId, x.participant) for x in report.rooms] == [
        ("room-a", "job-a", "agent-a")
    ]
    assert report.rooms[0].startedAt > 0
    assert set(_families(text)) == {s.name for s in WORKER_METRICS}


async def test_ready_follows_registration() -> None:
    m = WorkerMetrics()
    registered = False
    server = MetricsServer(make_app(m, SessionRegistry(2, m), lambda: registered), "127.0.0.1", 0)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}{READY_PATH}"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as r:
                assert r.status == 503  # up, but LiveKit cannot dispatch to it yet
            registered = True
            async with http.get(url) as r:
                assert r.status == 200
    finally:
        await server.aclose()


def test_livekit_agents_own_metrics_are_served_beside_ours() -> None:
    from livekit.agents.telemetry import metrics as lk
    from prometheus_client import generate_latest

    m = WorkerMetrics()
    lk.RUNNING_JOB_GAUGE.labels(nodename="test-node").set(3)
    text = generate_latest(m.registry).decode()
    assert 'lk_agents_active_job_count{nodename="test-node"} 3.0' in text
    assert "voicefleet_worker_active_sessions" in text
    # only livekit-agents' families come across, not the default registry's others
    assert "process_cpu_seconds_total" not in text and "python_gc_" not in text
