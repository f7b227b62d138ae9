"""The testbed's TCP relay (the load balancer in front of multi-node LiveKit): round robin
over its backends, a dead backend skipped, bytes passed both ways untouched, a backend that
goes away drops its connections. Real sockets on 127.0.0.1, no LiveKit needed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voicefleet_testbed.ports import free_port
from voicefleet_testbed.relay import RelayProcess, TcpRelay, host_port


async def serve(tag: bytes) -> asyncio.Server:
    """A backend that answers each line with its tag and the line."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while line := await r.readline():
            w.write(tag + b":" + line)
            await w.drain()
        w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def url(server: asyncio.Server) -> str:
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def backends() -> AsyncIterator[list[asyncio.Server]]:
    servers = [await serve(b"a"), await serve(b"b")]
    yield servers
    for s in servers:
        s.close()


async def ask(relay_url: str, line: bytes) -> tuple[bytes, asyncio.StreamWriter]:
    host, port = host_port(relay_url)
    r, w = await asyncio.open_connection(host, port)
    w.write(line)
    await w.drain()
    return await asyncio.wait_for(r.readline(), 5), w


async def test_round_robin_over_backends(backends: list[asyncio.Server]) -> None:
    with TcpRelay([url(s) for s in backends]) as relay:
        answers = []
        for i in range(4):
            got, w = await ask(relay.url, b"hi %d\n" % i)
            answers.append(got)
            w.close()
        assert answers == [b"a:hi 0\n", b"b:hi 1\n", b"a:hi 2\n", b"b:hi 3\n"]
        assert relay.connections == {0: 2, 1: 2}


async def test_a_dead_backend_is_skipped(backends: list[asyncio.Server]) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"  # nothing listens
    with TcpRelay([dead, url(backends[1])]) as relay:
        for _ in range(3):
            got, w = await ask(relay.url, b"x\n")
            assert got == b"b:x\n"
            w.close()
        assert relay.refused[0] >= 1 and relay.connections == {1: 3}


async def test_a_backend_that_closes_drops_the_client() -> None:
    """A node that dies closes its sockets: the client must see its connection end (and
    reconnect), not hang on a half-open relay."""

    async def once(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"bye:" + await r.readline())
        await w.drain()
        w.close()

    server = await asyncio.start_server(once, "127.0.0.1", 0)
    try:
        with TcpRelay([url(server)]) as relay:
            got, w = await ask(relay.url, b"1\n")
            assert got == b"bye:1\n"
            host, port = host_port(relay.url)
            r, w2 = await asyncio.open_connection(host, port)
            w2.write(b"2\n")
            await w2.drain()
            assert await asyncio.wait_for(r.readline(), 5) == b"bye:2\n"
            assert await asyncio.wait_for(r.read(), 5) == b""  # EOF: dropped
            w.close()
            w2.close()
    finally:
        server.close()


def test_loopback_only_and_urls_need_a_port() -> None:
    with pytest.raises(ValueError, match="loopback"):
        TcpRelay(["ws://127.0.0.1:1"], host="0.0.0.0")
    with pytest.raises(ValueError, match="host and port"):
        TcpRelay(["ws://127.0.0.1"])
    with pytest.raises(ValueError, match="at least one"):
        TcpRelay([])


async def test_the_relay_process_says_its_url_and_counts(
    backends: list[asyncio.Server], tmp_path: Path
) -> None:
    with RelayProcess([url(s) for s in backends], tmp_path / "relay.log") as relay:
        for i in range(2):
            got, w = await ask(relay.url, b"p%d\n" % i)
            assert got.endswith(b":p%d\n" % i)
            w.close()
        assert relay.counts()["connected"] == {1: 1, 2: 1}
    with socket.socket() as s:  # stopped: nothing listens there any more
        assert s.connect_ex(host_port(relay.url)) != 0
