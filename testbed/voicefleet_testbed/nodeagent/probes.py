"""Running one probe once: httpGet, tcpSocket, exec (grpc is reported as unsupported)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

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
