"""Tools without code: each configured tool is an HTTP endpoint the model can call.

A call POSTs the model's JSON arguments to the tool's URL (with its timeout) and hands
the answer back to the model as text: the body as-is (JSON is re-serialised compactly),
or a clear error string. Nothing a tool endpoint does can raise into the session.

The headers a tool sends come from the worker's environment (`ToolHeader.env`, set from
a Secret by the operator); their values are never logged or returned. A call never
reaches a link-local or cloud metadata address (`voicefleet_contract.netguard`): the
URL's host is checked as written, every address DNS gives for it is checked before the
connection (so a name that resolves there, or is re-pointed there, is refused), and a
redirect is followed only to the same scheme, host and port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from livekit.agents import llm
from yarl import URL

from voicefleet_contract.config import Tool
from voicefleet_contract.netguard import forbidden_address, forbidden_host

from .metrics import WorkerMetrics

log = logging.getLogger("voicefleet.worker.tools")
MAX_RESULT_CHARS: Final = 16_000
HEADER_ROOM: Final = "X-Voicefleet-Room"
HEADER_JOB: Final = "X-Voicefleet-Job"
MAX_REDIRECTS: Final = 5
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class ForbiddenAddress(OSError):
    """A tool call would reach a link-local or cloud metadata address."""


class GuardedResolver(AbstractResolver):
    """A resolver that refuses a name with any link-local or metadata address among its
    answers (not only skips it: a name that mixes them is not to be trusted). The
    connection is made to exactly the addresses checked here."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        for a in answers:
            why = forbidden_address(ipaddress.ip_address(a["host"].split("%", 1)[0]))
            if why:
                raise ForbiddenAddress(f"{host} resolves to {a['host']}: {why}")
        return answers

    async def close(self) -> None:
        await self.inner.close()


class ToolRefused(Exception):
    """The call is not made (or not followed further); the message is for the model."""


@dataclass(frozen=True)
class ToolResult:
    outcome: str  # ok | http_error | timeout | refused | error
    text: str  # what the model receives
    duration: float


def _truncate(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    return (
        text[:MAX_RESULT_CHARS] + f"... [truncated, {len(text) - MAX_RESULT_CHARS} more characters]"
    )


def result_text(body: str, content_type: str) -> str:
    """The model-facing text of a successful answer."""
    if "json" in content_type or body[:1] in ("{", "[", '"'):
        try:
            value = json.loads(body)
        except ValueError:
            return _truncate(body)
        if isinstance(value, str):
            return _truncate(value)
        return _truncate(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    return _truncate(body)


def tool_headers(tool: Tool, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers configured for `tool`, with their values from the environment. Raises
    `ToolRefused` naming the header (never its value) when one is not set."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for h in tool.headers:
        value = env.get(h.env)
        if not value:
            raise ToolRefused(
                f"error: the {tool.name} tool is misconfigured (its {h.name} header has no "
                "value in this worker); tell the user the service is unavailable"
            )
        out[h.name] = value
    return out


def _check_url(tool: Tool, url: URL) -> None:
    why = forbidden_host(url.raw_host or "")
    if why:
        log.warning("tool %s: refused to call %s: %s", tool.name, url.host, why)
        raise ToolRefused(f"error: the {tool.name} tool's address is not allowed ({why})")


def _same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


async def _post(
    http: aiohttp.ClientSession, tool: Tool, body: Any, headers: Mapping[str, str]
) -> tuple[int, str, str]:
    """POST with redirects followed by hand: only to the same origin (a tool's headers
    and arguments never go to another host), at most MAX_REDIRECTS."""
    url = URL(tool.url)
    method = "POST"
    for _ in range(MAX_REDIRECTS + 1):
        _check_url(tool, url)
        kw: dict[str, Any] = {"json": body} if method == "POST" else {}
        async with http.request(
            method, url, headers=dict(headers), allow_redirects=False, **kw
        ) as resp:
            location = resp.headers.get("Location")
            if resp.status not in REDIRECTS or not location:
                return resp.status, await resp.text(errors="replace"), resp.content_type
            target = url.join(URL(location))
            if not _same_origin(url, target):
                log.warning(
                    "tool %s: not following a redirect from %s to another host (%s)",
                    tool.name, url.host, target.host,
                )  # fmt: skip
                raise ToolRefused(
                    f"error: the {tool.name} tool redirected to another host "
                    f"({target.host}); not followed"
                )
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method = "GET"  # as browsers and aiohttp itself do
            url = target
    raise ToolRefused(f"error: the {tool.name} tool redirected more than {MAX_REDIRECTS} times")


async def call_tool(
    tool: Tool,
    arguments: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    resolver: AbstractResolver | None = None,
    environ: Mapping[str, str] | None = None,
) -> ToolResult:
    """`headers`: sent on top of the tool's own (`tool_headers`, from `environ`);
    `resolver`: the DNS under the guard (None: the system's)."""
    started = time.monotonic()

    def done(outcome: str, text: str) -> ToolResult:
        return ToolResult(outcome, text, time.monotonic() - started)

    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=GuardedResolver(resolver)))
    try:
        sent = {**tool_headers(tool, environ), **(headers or {})}
        async with asyncio.timeout(tool.timeoutSeconds):
            status, body, content_type = await _post(http, tool, dict(arguments), sent)
        if status >= 400:
            snippet = " ".join(body.split())[:300]
            return done(
                "http_error",
                f"error: the {tool.name} tool failed (HTTP {status}"
                + (f": {snippet})" if snippet else ")"),
            )
        return done("ok", result_text(body, content_type))
    except ToolRefused as e:
        return done("refused", str(e))
    except TimeoutError:
        return done(
            "timeout",
            f"error: the {tool.name} tool did not answer within {tool.timeoutSeconds:g} seconds",
        )
    except aiohttp.ClientError as e:
        if isinstance(e.__cause__, ForbiddenAddress):
            log.warning("tool %s: refused: %s", tool.name, e.__cause__)
            return done(
                "refused",
                f"error: the {tool.name} tool's address is not allowed ({e.__cause__})",
            )
        return done(
            "error", f"error: the {tool.name} tool could not be reached ({type(e).__name__})"
        )
    except Exception as e:  # never let a tool break the session
        log.exception("tool %s failed", tool.name)
        return done("error", f"error: the {tool.name} tool failed ({type(e).__name__})")
    finally:
        await http.close()


def make_tool(
    tool: Tool,
    metrics: WorkerMetrics | None = None,
    headers: Callable[[], Mapping[str, str]] | None = None,
) -> llm.RawFunctionTool[..., Any]:
    """A livekit-agents raw function tool with the configured name, description and schema."""
    if metrics is not None:
        metrics.init_tool(tool.name)
    schema = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}

    async def invoke(raw_arguments: dict[str, object]) -> str:
        result = await call_tool(tool, raw_arguments, headers=headers() if headers else None)
        if metrics is not None:
            metrics.tool_calls.labels(tool=tool.name, outcome=result.outcome).inc()
            if result.outcome in ("ok", "http_error"):
                metrics.tool_latency.labels(tool=tool.name).observe(result.duration)
        log.info(
            "tool call",
            extra={
                "tool": tool.name,
                "outcome": result.outcome,
                "duration": round(result.duration, 4),
            },
        )
        return result.text

    invoke.__name__ = tool.name
    return llm.function_tool(invoke, raw_schema=schema)


def make_tools(
    tools: tuple[Tool, ...],
    metrics: WorkerMetrics | None = None,
    headers: Callable[[], Mapping[str, str]] | None = None,
) -> list[llm.RawFunctionTool[..., Any]]:
    return [make_tool(t, metrics, headers) for t in tools]
