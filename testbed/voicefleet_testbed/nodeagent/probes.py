"""Running one probe once: httpGet, tcpSocket, exec (grpc is reported as unsupported),
and when to run the next one."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping

import aiohttp

from .podspec import Probe


async def run_probe(
    probe: Probe,
    env: Mapping[str, str],
    cwd: str,
    session: aiohttp.ClientSession,
) -> tuple[bool, str]:
    """(success, detail). A timeout or connection error is a failure, as in the kubelet."""
    try:
        if probe.kind == "httpGet":
            url = f"{probe.scheme.lower()}://{probe.host}:{probe.port}{probe.http_path}"
            async with session.get(
                url,
                headers=dict(probe.headers),
                timeout=aiohttp.ClientTimeout(total=probe.timeout),
                allow_redirects=False,
                ssl=False,
            ) as resp:
                ok = 200 <= resp.status < 400
                return ok, f"HTTP probe failed with statuscode: {resp.status}" if not ok else ""
        if probe.kind == "tcpSocket":
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(probe.host, probe.port), probe.timeout
            )
            writer.close()
            return True, ""
        if probe.kind == "exec":
            proc = await asyncio.create_subprocess_exec(
                *probe.command,
                env=dict(env),
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), probe.timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return False, f"command timed out after {probe.timeout}s"
            ok = proc.returncode == 0
            return ok, "" if ok else out.decode(errors="replace")[-200:]
        return False, f"{probe.kind} probes are not supported by the testbed"
    except (TimeoutError, OSError, aiohttp.ClientError) as e:
        return False, f"{type(e).__name__}: {e}"


def next_probe(now: float, due: float, period: float) -> tuple[float, float]:
    """(seconds to wait, the tick after) for a probe that finished at `now` with its next
    tick `due`: the kubelet's prober waits on a Go `time.Ticker`, not a sleep after each
    probe. A probe that overran its tick (a hung container's 1 s timeout at a 1 s period)
    runs again at once, since the ticker kept that one tick; ticks missed beyond it are
    dropped. So failures come one period apart, not period + timeout apart. Pure."""
    if now < due:
        return due - now, due + period
    missed = math.floor((now - due) / period)
    return 0.0, due + (missed + 1) * period


class ProbeTicker:
    """`await tick()` between probes, on the kubelet's schedule (`next_probe`)."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self.due = clock() + period

    async def tick(self) -> None:
        wait, self.due = next_probe(self.clock(), self.due, self.period)
        await asyncio.sleep(wait)
