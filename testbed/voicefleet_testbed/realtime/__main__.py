"""`python -m voicefleet_testbed.realtime --host 127.0.0.1 --port 0`: run the stand-in.

Prints `REALTIME_URL=http://HOST:PORT` and `OPENAI_BASE_URL=http://HOST:PORT/v1` once it
listens, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys

from ..realnode.config import POD_NET_BASE
from .server import RealtimeStandIn
from .settings import Settings


async def _serve(args: argparse.Namespace) -> None:
    defaults = Settings(modelDelayMs=args.model_delay_ms, responseMs=args.response_ms)
    standin = RealtimeStandIn(args.host, args.port, defaults)
    url = await standin.start()
    print(f"REALTIME_URL={url}", flush=True)
    print(f"OPENAI_BASE_URL={standin.base_url()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await standin.stop()


def _stays_here(host: str) -> bool:
    """Loopback, or the real node's bridge address (a network the stack creates itself)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip in POD_NET_BASE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m voicefleet_testbed.realtime")
    ap.add_argument(
        "--host", default="127.0.0.1", help="address to bind (loopback or the pod bridge)"
    )
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--model-delay-ms", type=float, default=Settings.modelDelayMs)
    ap.add_argument("--response-ms", type=float, default=Settings.responseMs)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    if not _stays_here(args.host):
        print(
            "error: the stand-in binds to loopback (127.0.0.0/8) or the testbed's pod "
            f"network ({POD_NET_BASE}) only",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
