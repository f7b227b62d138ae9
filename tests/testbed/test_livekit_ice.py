"""Media stays on the addresses the testbed allows LiveKit (Stack.livekit_addresses):
what a participant is told in signalling, what a real call runs over, and what the
livekit-server process binds. Against a LiveKit without the restrictions all three fail:
clients get LiveKit's public STUN servers, and its media sockets (so the calls) use the
host's external addresses (docs/testbed.md, "What the testbed's LiveKit is told").

A client's own host candidates are the client's business: libwebrtc never gathers on
loopback, so a caller on the host uses the host's interface addresses as its side of the
pair. The test holds it to addresses of this machine, of type host (nothing learned from a
server elsewhere), talking only to LiveKit's allowed addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from livekit import api, rtc
from livekit.protocol import rtc as signal

from voicefleet_testbed.caller import Caller, echo
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

pytestmark = pytest.mark.livekit
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
HOST = rtc.stats.IceCandidateType.HOST


def allowed(stack: Stack) -> set[IP]:
    return {ipaddress.ip_address(a.ip) for a in stack.livekit_addresses}


def token(stack: Stack, identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return (
        api.AccessToken(LIVEKIT_KEY, stack.livekit_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


def ice_server_host(url: str) -> IP:
    """The host of a `stun:`/`turn:` URL (RFC 7064/7065), which must be an IP here."""
    m = re.fullmatch(r"(stuns?|turns?):(\[[^\]]+\]|[^:?]+)(:\d+)?(\?.*)?", url)
    assert m, f"not a STUN/TURN URL: {url!r}"
    try:
        return ipaddress.ip_address(m.group(2).strip("[]"))
    except ValueError:
        raise AssertionError(f"ICE server {url!r} names a host, not an address") from None


def candidate_address(candidate: str) -> tuple[IP, str]:
    """(address, type) of an SDP candidate line (RFC 8839: foundation component transport
    priority address port typ type ...)."""
    parts = candidate.removeprefix("candidate:").split()
    assert len(parts) >= 8 and parts[6] == "typ", candidate
    return ipaddress.ip_address(parts[4]), parts[7]


async def join_signalling(stack: Stack, room: str) -> tuple[list[str], list[str]]:
    """Join `room` over LiveKit's signalling websocket as a bare client: the ICE server
    URLs of the JoinResponse, and the candidates LiveKit trickles for the connection it
    offers (at least one; read with a deadline)."""
    url = f"{stack.livekit_url}/rtc?access_token={token(stack, 'raw', room)}&protocol=16&sdk=python"
    servers: list[str] | None = None
    candidates: list[str] = []
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        while servers is None or not candidates:
            left = deadline - time.monotonic()
            assert left > 0, f"no JoinResponse and trickle in 10 s: {servers=} {candidates=}"
            msg = await ws.receive(timeout=left)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            res = signal.SignalResponse()
            res.ParseFromString(msg.data)
            kind = res.WhichOneof("message")
            if kind == "join":
                servers = [u for s in res.join.ice_servers for u in s.urls]
            elif kind == "trickle":
                init = res.trickle.candidateInit
                m = re.search(r'"candidate"\s*:\s*"([^"]*)"', init)
                assert m, init
                if m.group(1):  # an empty one ends gathering
                    candidates.append(m.group(1))
            elif kind == "offer":
                candidates += [
                    line.removeprefix("a=")
                    for line in res.offer.sdp.splitlines()
                    if line.startswith("a=candidate:")
                ]
    assert servers is not None
    return servers, candidates


async def test_a_participant_is_told_only_allowed_addresses(stack: Stack) -> None:
    servers, candidates = await join_signalling(stack, f"ice-{uuid.uuid4().hex[:6]}")
    ok = allowed(stack)
    # LiveKit names its public defaults when it has no STUN server: none here may be outside
    hosts = {u: ice_server_host(u) for u in servers}
    assert all(h in ok for h in hosts.values()), (hosts, ok)
    found = {c: candidate_address(c) for c in candidates}
    assert all(ip in ok and kind == "host" for ip, kind in found.values()), (found, ok)


class Stats:
    """One peer connection's ICE candidates and selected pair, from get_rtc_stats()."""

    def __init__(self, stats: list[rtc.stats.RtcStats]) -> None:
        self.local: dict[str, rtc.stats.IceCandidateStats] = {}
        self.remote: dict[str, rtc.stats.IceCandidateStats] = {}
        pairs: dict[str, rtc.stats.CandidatePairStats] = {}
        selected = ""
        for s in stats:
            kind = s.WhichOneof("stats")
            if kind == "local_candidate":
                self.local[s.local_candidate.rtc.id] = s.local_candidate.candidate
            elif kind == "remote_candidate":
                self.remote[s.remote_candidate.rtc.id] = s.remote_candidate.candidate
            elif kind == "candidate_pair":
                pairs[s.candidate_pair.rtc.id] = s.candidate_pair.candidate_pair
            elif kind == "transport" and s.transport.transport.selected_candidate_pair_id:
                selected = s.transport.transport.selected_candidate_pair_id
        self.pair = pairs.get(selected)

    def describe(self) -> dict[str, Any]:
        def show(c: rtc.stats.IceCandidateStats) -> str:
            kind = rtc.stats.IceCandidateType.Name(c.candidate_type)
            return f"{c.protocol} {c.address}:{c.port} {kind}"

        return {
            "local": sorted(show(c) for c in self.local.values()),
            "remote": sorted(show(c) for c in self.remote.values()),
            "selected": self.pair and (self.pair.local_candidate_id, self.pair.remote_candidate_id),
        }


def is_own_address(ip: IP) -> bool:
    """An address of this machine: binding to it succeeds only then (no IP_FREEBIND)."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(ip), 0))
        except OSError:
            return False
    return True


def address(c: rtc.stats.IceCandidateStats) -> IP | None:
    """A candidate's address; None when the stats hide it (libwebrtc blanks some
    peer-reflexive ones), which is never an allowed one."""
    try:
        return ipaddress.ip_address(c.address)
    except ValueError:
        return None


def check_peer_connection(stats: Stats, ok: set[IP]) -> None:
    """Everything this peer connection talks to is one of LiveKit's allowed addresses and
    its own side is host candidates on this machine; the selected pair is among them."""
    seen = stats.describe()
    assert stats.pair is not None, f"no selected candidate pair: {seen}"
    remote = stats.remote[stats.pair.remote_candidate_id]
    assert address(remote) in ok, (seen, ok)
    for c in stats.remote.values():
        assert address(c) in ok and c.candidate_type == HOST, (seen, ok)
    for c in stats.local.values():
        assert c.candidate_type == HOST, seen  # no server-reflexive/relay: no STUN/TURN used
        ip = address(c)
        assert ip is not None and is_own_address(ip), seen


def livekit_sockets(pid: int) -> list[tuple[str, str]]:
    """(protocol, local address) of every TCP and UDP socket of `pid`, from `ss`."""
    out = subprocess.run(
        ["ss", "-H", "-n", "-a", "-p", "-t", "-u"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        proto, _state, _rq, _sq, local = line.split()[:5]
        found.append((proto, local))
    return found


def socket_ip(local: str) -> IP | None:
    """The address of an `ss` local column (`127.0.0.1:7880`, `[::1]:80`, `*:7881`,
    `10.0.0.1%eth0:5`); None for a wildcard (every address)."""
    host = local.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    return None if host in ("*", "0.0.0.0", "::") else ipaddress.ip_address(host)


@pytest.fixture
async def cleanup() -> AsyncIterator[Callable[[echo.EchoAgent | Caller], None]]:
    things: list[echo.EchoAgent | Caller] = []
    yield things.append
    for t in reversed(things):
        await (t.stop() if isinstance(t, echo.EchoAgent) else t.close())


async def test_a_call_runs_only_on_allowed_addresses(
    stack: Stack, cleanup: Callable[[echo.EchoAgent | Caller], None]
) -> None:
    room = f"ice-call-{uuid.uuid4().hex[:6]}"
    caller = Caller(stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret, room, agent_name="echo")
    cleanup(caller)
    await caller.connect()
    agent = await echo.EchoAgent(
        stack.livekit_url, LIVEKIT_KEY, stack.livekit_secret, room, 0.2, 0.5
    ).start()
    cleanup(agent)
    assert await caller.wait_agent(10)
    turn = await caller.turn(0.8, timeout=10)  # audio both ways: the pairs carry media
    assert turn.latency_s is not None, caller.report

    ok = allowed(stack)
    checked = 0
    for who, r in (("caller", caller.room), ("agent", agent.room)):
        s = await r.get_rtc_stats()
        for side, pc in (("publisher", s.publisher_stats), ("subscriber", s.subscriber_stats)):
            stats = Stats(list(pc))
            if stats.pair is None and not stats.remote:
                continue  # this peer connection was never used
            try:
                check_peer_connection(stats, ok)
            except AssertionError as e:
                raise AssertionError(f"{who} {side}: {e}") from None
            checked += 1
    assert checked >= 2, "no connected peer connection to check"

    # While the call runs: livekit-server has nothing bound beyond the allowed addresses
    # (a wildcard is every address, so it counts as outside).
    pid = stack.state.procs["livekit-server"].pid
    sockets = await asyncio.to_thread(livekit_sockets, pid)
    assert any(p == "udp" for p, _ in sockets), sockets  # the media sockets were seen
    outside = [(p, a) for p, a in sockets if socket_ip(a) not in ok]
    assert not outside, f"livekit-server binds beyond {sorted(map(str, ok))}: {outside}"
