"""The API server for pods on the real node: a TCP relay from the bridge address to the
API server on 127.0.0.1 (which may listen nowhere else), behind the `kubernetes` Service
(10.0.0.1:443). TLS passes through untouched: pods verify the API server's certificate
(it names 10.0.0.1 and kubernetes.default.svc) with the CA in kube-root-ca.crt.

  python -m voicefleet_testbed.realnode.apiproxy --listen 10.244.1.1:6443 --to 127.0.0.1:6443
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

PORT = 6443  # on the bridge address, so it never clashes with another stack's


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction. The sender's EOF is passed on as a half-close, never a close: a
    client that shuts down its sending side (nc does, at the end of its input) still gets
    the answer on the other direction."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


def _close(*writers: asyncio.StreamWriter) -> None:
    for w in writers:
        with contextlib.suppress(OSError, RuntimeError):
            w.close()


async def relay(listen: tuple[str, int], target: tuple[str, int], stop: asyncio.Event) -> None:
    """Relay connections on `listen` to `target` until `stop` is set."""

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection(*target), 5)
        except (OSError, TimeoutError):
            _close(cw)
            return
        try:
            await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw))
        finally:
            _close(cw, uw)

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await stop.wait()


async def _until_signalled(listen: tuple[str, int], target: tuple[str, int]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await relay(listen, target, stop)


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=_addr, required=True)
    p.add_argument("--to", type=_addr, required=True)
    args = p.parse_args(argv)
    asyncio.run(_until_signalled(args.listen, args.to))


if __name__ == "__main__":
    main()
