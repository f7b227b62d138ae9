"""The scraper against real fake-worker processes on loopback (no cluster needed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from voicefleet_contract.sessions import parse_sessions
from voicefleet_operator.scrape import Scraper, Target
from voicefleet_testbed.ports import free_port
from voicefleet_testbed.procs import wait_for


def port_open(ip: str, port: int) -> bool:
    with socket.create_connection((ip, port), 0.2):
        return True


def start_fake(
    ip: str, metrics: int, health: int, active: int, capacity: int
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, POD_IP=ip, VOICEFLEET_METRICS_PORT=str(metrics), VOICEFLEET_HEALTH_PORT=str(health),
               FAKE_ACTIVE_SESSIONS=str(active), FAKE_CAPACITY=str(capacity))  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "voicefleet_testbed.fake_worker"], env=env)
    wait_for(lambda: port_open(ip, metrics), 10, "fake worker")
    return proc


@pytest.fixture
def fakes() -> Iterator[list[Target]]:
    procs, targets = [], []
    for i, active in enumerate((2, 5)):
        ip = f"127.0.9.{i + 1}"
        port = free_port(ip)
        procs.append(start_fake(ip, port, free_port(ip), active, 8))
        targets.append(Target(f"ns/w{i}", ip, port))
    yield targets
    for p in procs:
        p.kill()
        p.wait()


def control(target: Target, body: dict[str, object]) -> None:
    req = urllib.request.Request(
        f"http://{target.ip}:{target.port}/control", data=json.dumps(body).encode(), method="POST"
    )
    urllib.request.urlopen(req, timeout=2).close()


async def test_reads_every_worker_in_parallel(fakes: list[Target]) -> None:
    scraper = Scraper(timeout=1.0)
    try:
        results = await scraper.all(fakes)
    finally:
        await scraper.close()
    assert [r.report.activeSessions if r.report else None for r in results] == [2, 5]
    assert all(r.report and r.report.capacity == 8 for r in results)


async def test_hung_and_dead_pods_are_unknown_not_empty(fakes: list[Target]) -> None:
    control(fakes[0], {"hang": True})
    dead = Target("ns/dead", "127.0.9.9", free_port("127.0.9.9"))
    scraper = Scraper(timeout=0.3)
    try:
        hung, ok, gone = await scraper.all([fakes[0], fakes[1], dead])
    finally:
        await scraper.close()
    assert (hung.report, hung.error) == (None, "timeout")
    assert ok.report is not None
    assert ok.report.activeSessions == 5
    assert (gone.report, gone.error) == (None, "refused")


def test_sessions_report_rejects_malformed() -> None:
    with pytest.raises(ValueError, match="activeSessions"):
        parse_sessions({"activeSessions": -1, "capacity": 1})
    with pytest.raises(ValueError, match="capacity"):
        parse_sessions({"activeSessions": 1, "capacity": True})
    r = parse_sessions({"activeSessions": 1, "capacity": 2, "rooms": [{"room": "a", "jobId": "j"}]})
    assert r.rooms[0].room == "a"
