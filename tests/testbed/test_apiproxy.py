"""The real node's API server relay passes a client's half-close on and still delivers the
answer (busybox nc shuts down its sending side once its input ends, before the reply)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from voicefleet_testbed.realnode.apiproxy import relay


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _connect_when_listening(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.01)


async def test_a_half_closed_client_still_gets_the_answer() -> None:
    async def answer_after_eof(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # Like a server that answers only once the request is complete: after the EOF.
        request = await r.read()
        w.write(b"got " + request)
        await w.drain()
        w.close()

    upstream = await asyncio.start_server(answer_after_eof, "127.0.0.1", 0)
    target = upstream.sockets[0].getsockname()[:2]
    port = _free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(relay(("127.0.0.1", port), target, stop))
    try:
        reader, writer = await _connect_when_listening(port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), 5)
        assert got == b"got GET / HTTP/1.0\r\n\r\n"
        writer.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        upstream.close()
