"""Redis and multi-node LiveKit in the testbed (issue 18).

Pure table tests of what each node is told (its own ports, the shared Redis, one region per
node, and still no outside STUN server and media on the allowed addresses only), and, on
the `multinode_stack` (Redis + two livekit-server nodes): both nodes answer and register
in Redis, LiveKit's SIP API works with Redis and fails without it, rooms land on the node
that creates them or that `node_id` names and every node lists every room, a participant
signalling through one node is served by the room's node, a call runs across nodes, and
an agent registered with one node is dispatched to rooms on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api, rtc
from livekit.protocol import agent as agent_pb
from livekit.protocol import rtc as signal

from tests.testbed.test_livekit_config import build
from tests.testbed.test_livekit_ice import token
from voicefleet_contract.livekit_url import http_url
from voicefleet_testbed import livekit_nodes as lkn
from voicefleet_testbed.caller import Caller, echo
from voicefleet_testbed.livekit_config import Cluster
from voicefleet_testbed.redis import RedisClient, RedisError, encode, read_reply, redis_config
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

CONNECTED = rtc.ConnectionState.CONN_CONNECTED
DISCONNECTED = rtc.ConnectionState.CONN_DISCONNECTED


# --- pure: the config each node gets -------------------------------------------------------
def planned(tmp_path: Path, nodes: int, redis: bool) -> Stack:
    """A stack that is not running, with its LiveKit ports and Redis password picked as
    `up` picks them."""
    s = Stack(tmp_path, progress=lambda _: None)
    s.state.livekit_nodes, s.state.redis = nodes, redis
    s.state.livekit_secret = "s" * 32
    s._pick_livekit_ports({})
    return s


def configs(s: Stack) -> list[dict[str, Any]]:
    return [s.livekit_node_config(n) for n in range(1, s.state.livekit_nodes + 1)]


@pytest.mark.parametrize("nodes", [2, 3])
def test_every_node_has_its_own_ports(tmp_path: Path, nodes: int) -> None:
    s = planned(tmp_path, nodes, redis=True)
    cs = configs(s)
    ports = [p for c in cs for p in (c["port"], c["rtc"]["udp_port"], c["prometheus"]["port"])]
    ports.append(s.state.ports["redis"])
    assert len(set(ports)) == len(ports) == 3 * nodes + 1, ports
    assert s.livekit_urls == [f"ws://127.0.0.1:{c['port']}" for c in cs]
    assert s.livekit_url == s.livekit_urls[0]
    assert [u.rsplit(":", 1)[1] for u in s.livekit_metrics_urls] == [
        f"{c['prometheus']['port']}/metrics" for c in cs
    ]


def test_every_node_shares_redis_keys_and_webhook(tmp_path: Path) -> None:
    s = planned(tmp_path, 2, redis=True)
    cs = configs(s)
    password = s.state.redis_password
    assert len(password) >= 32
    for c in cs:
        assert c["redis"] == {"address": s.redis_address, "password": password}
        assert c["keys"] == {LIVEKIT_KEY: "s" * 32}
        assert c["webhook"] == {"api_key": LIVEKIT_KEY, "urls": [s.webhook_url]}
    assert s.redis_address == f"127.0.0.1:{s.state.ports['redis']}"


def test_one_region_per_node_and_a_region_aware_selector(tmp_path: Path) -> None:
    cs = configs(planned(tmp_path, 2, redis=True))
    assert [c["region"] for c in cs] == ["node-1", "node-2"]
    for c in cs:
        sel = c["node_selector"]
        assert sel["kind"] == "regionaware"
        assert [r["name"] for r in sel["regions"]] == ["node-1", "node-2"]
        # distinct places, so each node's nearest region is its own
        assert len({(r["lat"], r["lon"]) for r in sel["regions"]}) == 2
        assert sel["sysload_limit"] >= 100  # one machine's load says nothing between nodes


def test_no_outside_stun_and_media_on_allowed_addresses_on_every_node(tmp_path: Path) -> None:
    for c in configs(planned(tmp_path, 2, redis=True)):
        rtc = c["rtc"]
        assert c["bind_addresses"] == ["127.0.0.1"]
        assert rtc["stun_servers"] == [f"127.0.0.1:{c['port']}"]  # its own, never a default
        assert rtc["node_ip"] == "127.0.0.1" and rtc["use_external_ip"] is False
        assert rtc["interfaces"] == {"includes": ["lo"]}
        assert rtc["ips"] == {"includes": ["127.0.0.1/32"]}
        assert rtc["enable_loopback_candidate"] is True
        assert rtc["tcp_port"] == 0
        assert c["redis"]["address"].startswith("127.0.0.1:")


def test_one_node_without_redis_is_what_it_always_was(tmp_path: Path) -> None:
    s = planned(tmp_path, 1, redis=False)
    (c,) = configs(s)
    assert not {"redis", "region", "node_selector", "prometheus"} & c.keys()
    assert set(s.state.ports) == {"livekit", "livekit-rtc-udp"}
    assert s.livekit_urls == [s.livekit_url] and s.livekit_metrics_urls == []
    assert s.redis_address is None and s.state.redis_password == ""


def test_one_node_with_redis_for_the_sip_api(tmp_path: Path) -> None:
    (c,) = configs(planned(tmp_path, 1, redis=True))
    assert c["redis"]["address"].startswith("127.0.0.1:")
    assert c["region"] == "node-1"
    assert [r["name"] for r in c["node_selector"]["regions"]] == ["node-1"]


@pytest.mark.parametrize(
    ("asked", "running", "shape"),
    [
        ((None, None), None, (1, False)),  # a new stack: one node, no Redis
        ((2, None), None, (2, True)),  # several nodes bring Redis
        ((1, True), None, (1, True)),  # one node with Redis (SIP)
        ((None, None), (2, True), (2, True)),  # a running stack keeps its shape
        ((1, None), (2, True), (1, True)),  # ... and its Redis when only the count changes
        ((None, False), (1, True), (1, False)),
    ],
)
def test_shape_asked_or_kept(
    tmp_path: Path,
    asked: tuple[int | None, bool | None],
    running: tuple[int, bool] | None,
    shape: tuple[int, bool],
) -> None:
    s = Stack(tmp_path, progress=lambda _: None)
    if running:
        s.state.livekit_nodes, s.state.redis = running
    assert s._livekit_shape(*asked, keep=running is not None) == shape


@pytest.mark.parametrize(
    ("nodes", "redis", "message"),
    [(2, False, "need Redis"), (0, True, "1 to"), (lkn.MAX_NODES + 1, True, "1 to")],
)
def test_shapes_refused(nodes: int, redis: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lkn.check_shape(nodes, redis)


def test_part_names_keep_node_one_as_it_was() -> None:
    assert [lkn.part(n) for n in (1, 2)] == ["livekit-server", "livekit-server-2"]
    assert [lkn.port_key(n) for n in (1, 2)] == ["livekit", "livekit-2"]
    assert lkn.port_key(1, "rtc-udp") == "livekit-rtc-udp"
    assert lkn.port_key(2, "metrics") == "livekit-2-metrics"
    assert [lkn.config_name(n) for n in (1, 2)] == ["livekit.yaml", "livekit-2.yaml"]


CLUSTER = Cluster("127.0.0.1:6390", "pw", "node-1", ("node-1", "node-2"))


def test_a_password_less_redis_names_none() -> None:
    c = build(cluster=Cluster("127.0.0.1:6390", "", "a", ("a",)))
    assert c["redis"] == {"address": "127.0.0.1:6390"}


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"cluster": Cluster("localhost:6379", "", "a", ("a",))}, "cluster.redis_address"),
        ({"cluster": Cluster("127.0.0.1", "", "a", ("a",))}, "cluster.redis_address"),
        ({"cluster": Cluster("127.0.0.1:0", "", "a", ("a",))}, "cluster.redis_address"),
        ({"cluster": Cluster("[::1]:6379", "", "a", ("a",))}, "cluster.redis_address"),
        ({"cluster": Cluster("127.0.0.1:6379", "", "", ("a",))}, "cluster.region"),
        ({"cluster": Cluster("127.0.0.1:6379", "", "c", ("a", "b"))}, "cluster.region"),
        ({"cluster": Cluster("127.0.0.1:6379", "", "a", ("a", "a"))}, "cluster.regions"),
        ({"prometheus_port": 70000}, "prometheus_port"),
    ],
)
def test_bad_cluster_input_names_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"{field}: ")):
        build(**kw)


# --- pure: Redis's config and the RESP client ----------------------------------------------
def test_redis_config_is_loopback_only_password_protected_and_ephemeral(tmp_path: Path) -> None:
    lines = redis_config(port=6390, directory=tmp_path, password="abc123").splitlines()
    for line in [
        "bind 127.0.0.1",
        "protected-mode yes",
        "port 6390",
        'requirepass "abc123"',
        'save ""',
        "appendonly no",
        f'dir "{tmp_path}"',
        "daemonize no",
    ]:
        assert line in lines
    assert not [line for line in lines if line.startswith("bind") and line != "bind 127.0.0.1"]


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"port": 0}, "port"), ({"password": ""}, "password"), ({"password": 'a "b'}, "password")],
)
def test_redis_config_bad_input(tmp_path: Path, kw: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"port": 6390, "directory": tmp_path, "password": "pw"}
    with pytest.raises(ValueError, match=f"^{field}: "):
        redis_config(**(args | kw))


def test_resp_encoding() -> None:
    assert encode(["HGETALL", b"k"]) == b"*2\r\n$7\r\nHGETALL\r\n$1\r\nk\r\n"


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"+PONG\r\n", b"PONG"),
        (b":42\r\n", 42),
        (b"$3\r\na\r\n\r\n", b"a\r\n"),  # bulk strings are read by length
        (b"$-1\r\n", None),
        (b"*2\r\n$1\r\nk\r\n:1\r\n", [b"k", 1]),
        (b"*0\r\n", []),
    ],
)
def test_resp_replies(wire: bytes, reply: object) -> None:
    assert read_reply(io.BytesIO(wire)) == reply


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"-NOAUTH Authentication required.\r\n", "NOAUTH"),
        (b"+PON", "mid-reply"),
        (b"?x\r\n", "unknown"),
    ],
)
def test_resp_errors(wire: bytes, message: str) -> None:
    with pytest.raises(RedisError, match=message):
        read_reply(io.BytesIO(wire))


def test_node_id_from_metrics() -> None:
    text = (
        "# HELP livekit_room_total\n# TYPE livekit_room_total gauge\n"
        'go_goroutines 12\nlivekit_room_total{node_id="ND_abc",node_type="SERVER"} 3\n'
    )
    assert lkn.node_id_from_metrics(text) == "ND_abc"
    assert lkn.node_id_from_metrics("go_goroutines 12\n") is None


# --- on the two-node stack -----------------------------------------------------------------
def lkapi(url: str, stack: Stack) -> api.LiveKitAPI:
    return api.LiveKitAPI(http_url(url), LIVEKIT_KEY, stack.livekit_secret)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll `check` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def rooms(multinode_stack: Stack) -> AsyncIterator[list[str]]:
    """Room names a test creates; deleted afterwards (through node 1: any node will do)."""
    names: list[str] = []
    yield names
    async with lkapi(multinode_stack.livekit_url, multinode_stack) as lk:
        for name in names:
            with contextlib.suppress(api.TwirpError):  # already gone
                await lk.room.delete_room(api.DeleteRoomRequest(room=name))


def room_name(tag: str) -> str:
    return f"mn-{tag}-{uuid.uuid4().hex[:6]}"


@pytest.mark.livekit
@pytest.mark.cluster
@pytest.mark.multinode
async def test_both_nodes_answer_and_register_in_redis(multinode_stack: Stack) -> None:
    s = multinode_stack
    assert len(s.livekit_urls) == 2
    async with aiohttp.ClientSession() as http:
        for url in s.livekit_urls:
            async with http.get(http_url(url)) as r:
                assert r.status == 200, (url, await r.text())
    ids = [s.livekit_node_id(n) for n in (1, 2)]
    assert len(set(ids)) == 2 and all(i.startswith("ND_") for i in ids), ids
    registered = s.redis_client().hkeys("nodes")
    assert set(ids) <= set(registered), (ids, registered)
    status = {name: alive for name, alive, _ in s.status()}
    assert status["redis"] and status["livekit-server"] and status["livekit-server-2"]


@pytest.mark.livekit
@pytest.mark.cluster
@pytest.mark.multinode
def test_redis_is_loopback_only_with_its_password_nowhere_else(multinode_stack: Stack) -> None:
    s = multinode_stack
    c = s.redis_client()
    assert c.ping()
    with pytest.raises(RedisError, match="NOAUTH"):
        RedisClient(c.host, c.port).command("PING")  # without the password
    config = c.command("CONFIG", "GET", "*")
    assert isinstance(config, list)
    got = dict(zip(config[::2], config[1::2], strict=True))
    assert got[b"bind"] == b"127.0.0.1"
    assert got[b"protected-mode"] == b"yes"
    assert got[b"save"] == b""
    assert got[b"appendonly"] == b"no"
    assert got[b"dir"] == str(s.dir / "redis").encode()
    # The password is in the two 0600 config files LiveKit and Redis read, and in no log
    # or command line.
    password = s.state.redis_password.encode()
    for log in s.logs_dir.iterdir():
        assert password not in log.read_bytes(), log
    for name in ("redis", "livekit-server", "livekit-server-2"):
        cmdline = Path(f"/proc/{s.state.procs[name].pid}/cmdline").read_bytes()
        assert password not in cmdline, name
    for f in ("redis.conf", "livekit.yaml", "livekit-2.yaml"):
        assert (s.dir / f).stat().st_mode & 0o077 == 0, f


@pytest.mark.livekit
@pytest.mark.cluster
async def test_sip_api_needs_redis(stack: Stack) -> None:
    """LiveKit's SIP API on the session's plain one-node stack: refused, as LiveKit keeps
    trunks and dispatch rules in Redis only."""
    if stack.state.redis:
        pytest.skip("the reused stack runs Redis")
    async with lkapi(stack.livekit_url, stack) as lk:
        with pytest.raises(api.TwirpError) as e:
            await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
    # LiveKit's ErrSIPNotConnected (pkg/service/errors.go), as its Twirp layer wraps it
    assert (e.value.code, e.value.status) == (api.TwirpErrorCode.INTERNAL, 500)
    assert e.value.message == "twirp error unknown: sip not connected (redis required)"


@pytest.mark.livekit
@pytest.mark.cluster
@pytest.mark.multinode
async def test_sip_api_works_with_redis_through_either_node(multinode_stack: Stack) -> None:
    s = multinode_stack
    name = room_name("trunk")
    async with lkapi(s.livekit_urls[0], s) as one, lkapi(s.livekit_urls[1], s) as two:
        for lk in (one, two):
            await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        trunk = await one.sip.create_inbound_trunk(
            api.CreateSIPInboundTrunkRequest(
                trunk=api.SIPInboundTrunkInfo(name=name, numbers=["+15550100"])
            )
        )
        try:
            listed = await two.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
            assert [t.name for t in listed.items if t.sip_trunk_id == trunk.sip_trunk_id] == [name]
        finally:
            await two.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
        listed = await one.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        assert trunk.sip_trunk_id not in {t.sip_trunk_id for t in listed.items}


@pytest.mark.livekit
@pytest.mark.cluster
@pytest.mark.multinode
async def test_rooms_land_on_the_node_asked_and_every_node_lists_them(
    multinode_stack: Stack, rooms: list[str]
) -> None:
    """A room goes to the node whose API created it (the region-aware selector prefers the
    node's own region), or to the node `node_id` names through either node; ListRooms on
    each node sees every room (the room store is Redis)."""
    s = multinode_stack
    ids = {n: s.livekit_node_id(n) for n in (1, 2)}
    want: dict[str, int] = {}
    async with lkapi(s.livekit_urls[0], s) as one, lkapi(s.livekit_urls[1], s) as two:
        for via, lk in ((1, one), (2, two)):
            for tag in ("a", "b"):
                name = room_name(f"via{via}{tag}")
                rooms.append(name)
                await lk.room.create_room(api.CreateRoomRequest(name=name))
                want[name] = via
            # and the other node, named by id, through this one
            other = 3 - via
            name = room_name(f"via{via}-on{other}")
            rooms.append(name)
            await lk.room.create_room(api.CreateRoomRequest(name=name, node_id=ids[other]))
            want[name] = other
        placed = s.room_nodes()
        assert {r: placed.get(r) for r in want} == want
        for lk in (one, two):
            listed = await lk.room.list_rooms(api.ListRoomsRequest(names=list(want)))
            assert sorted(r.name for r in listed.rooms) == sorted(want)

    async def hosted_counts_match() -> bool:
        """Each node's own livekit_room_total gauge counts the rooms it hosts."""
        placed = s.room_nodes()
        for node, url in enumerate(s.livekit_metrics_urls, start=1):
            if await room_total(url) != sum(1 for n in placed.values() if n == node):
                return False
        return True

    await eventually(hosted_counts_match, 15, "each node's livekit_room_total = its rooms")


async def room_total(metrics_url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as r:
        text = await r.text()
    m = re.search(r"^livekit_room_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    assert m, f"no livekit_room_total at {metrics_url}"
    return int(float(m.group(1)))


async def join_response(stack: Stack, url: str, room: str) -> signal.JoinResponse:
    """Join `room` over node `url`'s signalling websocket as a bare client: the
    JoinResponse (read with a deadline; leaving closes the socket)."""
    ws_url = f"{url}/rtc?access_token={token(stack, 'probe', room)}&protocol=16&sdk=python"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        deadline = time.monotonic() + 10
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no JoinResponse in 10 s"
            msg = await ws.receive(timeout=left)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            res = signal.SignalResponse()
            res.ParseFromString(msg.data)
            if res.WhichOneof("message") == "join":
                return res.join


@pytest.mark.livekit
@pytest.mark.cluster
@pytest.mark.multinode
async def test_a_participant_signalling_through_one_node_is_served_by_the_rooms_node(
    multinode_stack: Stack, rooms: list[str]
) -> None:
    """Joining through node 1 a room that node 2 hosts: the JoinResponse comes from node 2
    (its ServerInfo names node 2's region and id) with node 2's own STUN address; and a
    room first heard of through a join lands on the node joined through."""
    s = multinode_stack
    on_two = room_name("on2")
    rooms.append(on_two)
    async with lkapi(s.livekit_urls[1], s) as two:
        await two.room.create_room(api.CreateRoomRequest(name=on_two))
    join = await join_response(s, s.livekit_urls[0], on_two)
    assert (join.server_info.region, join.server_info.node_id) == ("node-2", s.livekit_node_id(2))
    node2 = s.livekit_node_config(2)
    assert [u for i in join.ice_servers for u in i.urls] == [f"stun:127.0.0.1:{node2['port']}"]

    for via in (1, 2):  # a join is the first the stack hears of the room
        name = room_name(f"join{via}")
        rooms.append(name)
        join = await join_response(s, s.livekit_urls[via - 1], name)
        assert join.server_info.region == lkn.region(via)
        assert s.room_nodes()[name] == via


@pytest.mark.livekit
@pytest.mark.cluster
@pytest.mark.multinode
async def test_a_call_runs_across_nodes(multinode_stack: Stack, rooms: list[str]) -> None:
    """The caller signals through node 1, the agent through node 2, the room is on node 2:
    both hear each other, and the caller's media goes to node 2's UDP port."""
    s = multinode_stack
    name = room_name("call")
    rooms.append(name)
    async with lkapi(s.livekit_urls[1], s) as two:
        await two.room.create_room(api.CreateRoomRequest(name=name))
    caller = Caller(s.livekit_urls[0], LIVEKIT_KEY, s.livekit_secret, name, dispatch="none")
    agent = echo.EchoAgent(s.livekit_urls[1], LIVEKIT_KEY, s.livekit_secret, name, 0.2, 0.5)
    try:
        await caller.connect()
        await agent.start()
        assert await caller.wait_agent(10)
        turn = await caller.turn(0.8, timeout=10)
        assert turn.latency_s is not None, caller.report
        stats = await caller.room.get_rtc_stats()
        remote_ports = {
            st.remote_candidate.candidate.port
            for st in [*stats.publisher_stats, *stats.subscriber_stats]
            if st.WhichOneof("stats") == "remote_candidate"
        }
        assert remote_ports == {s.state.ports[lkn.port_key(2, "rtc-udp")]}, remote_ports
    finally:
        await agent.stop()
        await caller.close()


class BareWorker:
    """An agent worker at the protocol level (what livekit-agents' worker sends): it
    registers `agent_name` with one node's /agent endpoint and accepts every job offered,
    recording the rooms."""

    def __init__(self, stack: Stack, url: str, agent_name: str) -> None:
        self.stack, self.url, self.agent_name = stack, url, agent_name
        self.offered: list[str] = []  # rooms, in the order LiveKit asked
        self.assigned: list[str] = []
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> BareWorker:
        token = (
            api.AccessToken(LIVEKIT_KEY, self.stack.livekit_secret)
            .with_grants(api.VideoGrants(agent=True))
            .to_jwt()
        )
        self._http = aiohttp.ClientSession()
        self._ws = ws = await self._http.ws_connect(
            f"{self.url}/agent", headers={"Authorization": f"Bearer {token}"}
        )
        req = agent_pb.WorkerMessage()
        req.register.type = agent_pb.JT_ROOM
        req.register.agent_name = self.agent_name
        await ws.send_bytes(req.SerializeToString())
        first = agent_pb.ServerMessage()
        first.ParseFromString(await asyncio.wait_for(ws.receive_bytes(), 10))
        assert first.HasField("register"), first
        self._task = asyncio.create_task(self._serve(ws))
        return self

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            m = agent_pb.ServerMessage()
            m.ParseFromString(msg.data)
            kind = m.WhichOneof("message")
            if kind == "availability":
                self.offered.append(m.availability.job.room.name)
                answer = agent_pb.WorkerMessage()
                answer.availability.job_id = m.availability.job.id
                answer.availability.available = True
                answer.availability.participant_identity = f"agent-{uuid.uuid4().hex[:6]}"
                await ws.send_bytes(answer.SerializeToString())
            elif kind == "assignment":
                self.assigned.append(m.assignment.job.room.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._ws:
            await self._ws.close()
        if self._http:
            await self._http.close()


@pytest.mark.livekit
@pytest.mark.cluster
@pytest.mark.multinode
async def test_an_agent_registered_with_one_node_is_dispatched_to_rooms_on_both(
    multinode_stack: Stack, rooms: list[str]
) -> None:
    """One worker, registered with node 1 only; a room with an agent dispatch on each node:
    the room's node offers the job over Redis (psrpc) to the node holding the worker."""
    s = multinode_stack
    agent_name = f"mn-agent-{uuid.uuid4().hex[:6]}"
    worker = await BareWorker(s, s.livekit_urls[0], agent_name).start()
    try:
        want = {}
        async with lkapi(s.livekit_urls[0], s) as one, lkapi(s.livekit_urls[1], s) as two:
            for via, lk in ((1, one), (2, two)):
                name = room_name(f"dispatch{via}")
                rooms.append(name)
                dispatch = api.RoomAgentDispatch(agent_name=agent_name)
                await lk.room.create_room(api.CreateRoomRequest(name=name, agents=[dispatch]))
                want[name] = via

        async def both_assigned() -> bool:
            return sorted(worker.assigned) == sorted(want)

        await eventually(both_assigned, 20, f"jobs for {sorted(want)} (got {worker.assigned})")
        assert sorted(worker.offered) == sorted(want)  # each offered once, not twice
        placed = s.room_nodes()
        assert {r: placed[r] for r in want} == want
    finally:
        await worker.stop()


@pytest.mark.livekit
@pytest.mark.cluster
@pytest.mark.multinode
@pytest.mark.slow
async def test_killing_the_rooms_node_moves_the_room_and_offers_its_agent_again(
    multinode_stack: Stack, rooms: list[str]
) -> None:
    """Node 2 hosts a call and is SIGKILLed. Participants signalling through node 1 get the
    room back on node 1 (same room, resumed: the call is answered again); the one that
    signalled through node 2 only knows that URL and is lost. When the room reappears on
    node 1, LiveKit dispatches the room's agent again: the fleet is offered the job a
    second time while the first agent may still be in the room (docs/testbed.md, "Redis
    and multi-node LiveKit"). Node 2 is started again afterwards, with a new node id."""
    s = multinode_stack
    agent_name = f"mn-kill-{uuid.uuid4().hex[:6]}"
    name = room_name("kill")
    rooms.append(name)
    worker = await BareWorker(s, s.livekit_urls[0], agent_name).start()
    via1 = Caller(s.livekit_urls[0], LIVEKIT_KEY, s.livekit_secret, name, dispatch="none")
    via2 = Caller(s.livekit_urls[1], LIVEKIT_KEY, s.livekit_secret, name, dispatch="none")
    agent = echo.EchoAgent(s.livekit_urls[0], LIVEKIT_KEY, s.livekit_secret, name, 0.2, 0.5)
    try:
        async with lkapi(s.livekit_urls[1], s) as two:
            dispatch = api.RoomAgentDispatch(agent_name=agent_name)
            await two.room.create_room(api.CreateRoomRequest(name=name, agents=[dispatch]))
        for p in (via1, via2):
            await p.connect()
        await agent.start()
        assert await via1.wait_agent(10)
        assert (await via1.turn(0.8, timeout=10)).latency_s is not None, via1.report

        async def offered(n: int) -> bool:
            return worker.offered == [name] * n

        await eventually(functools.partial(offered, 1), 10, "the agent job offered once")
        assert s.room_nodes()[name] == 2

        await asyncio.to_thread(s.kill_part, lkn.part(2))
        killed = time.monotonic()

        async def moved() -> bool:
            return s.room_nodes().get(name) == 1 and via1.room.connection_state == CONNECTED

        await eventually(moved, 30, "the room back on node 1 with the caller in it")
        moved_after = time.monotonic() - killed
        assert await via1.wait_agent(10)
        assert (await via1.turn(0.8, timeout=10)).latency_s is not None, via1.report
        await eventually(functools.partial(offered, 2), 10, "the agent job offered again")

        async def lost() -> bool:
            return via2.room.connection_state == DISCONNECTED

        await eventually(lost, 40, "the caller that signalled through node 2 given up")
        print(f"room moved {moved_after:.1f}s after the kill; via node 2 lost after "
              f"{time.monotonic() - killed:.1f}s")  # fmt: skip
    finally:
        await agent.stop()
        for p in (via1, via2):
            await p.close()
        await worker.stop()
        if not s.running().get(lkn.part(2)):
            await asyncio.to_thread(s.restart, lkn.part(2))
