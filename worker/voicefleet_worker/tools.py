"""Tools without code: each configured tool is an HTTP endpoint the model can call.

A call POSTs the model's JSON arguments to the tool's URL (with its timeout) and hands
the answer back to the model as text: the body as-is (JSON is re-serialised compactly),
or a clear error string. Nothing a tool endpoint does can raise into the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from livekit.agents import llm

from voicefleet_contract.config import Tool

from .metrics import WorkerMetrics

log = logging.getLogger("voicefleet.worker.tools")
MAX_RESULT_CHARS: Final = 16_000
HEADER_ROOM: Final = "X-Voicefleet-Room"
HEADER_JOB: Final = "X-Voicefleet-Job"


@dataclass(frozen=True)
class ToolResult:
    outcome: str  # ok | http_error | timeout | error
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


async def call_tool(
    tool: Tool,
    arguments: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> ToolResult:
    started = time.monotonic()

    def done(outcome: str, text: str) -> ToolResult:
        return ToolResult(outcome, text, time.monotonic() - started)

    own = session is None
    http = session or aiohttp.ClientSession()
    try:
        async with asyncio.timeout(tool.timeoutSeconds):
            async with http.post(
                tool.url, json=dict(arguments), headers=dict(headers or {})
            ) as resp:
                body = await resp.text(errors="replace")
                if resp.status >= 400:
                    snippet = " ".join(body.split())[:300]
                    return done(
                        "http_error",
                        f"error: the {tool.name} tool failed (HTTP {resp.status}"
                        + (f": {snippet})" if snippet else ")"),
                    )
                return done("ok", result_text(body, resp.headers.get("Content-Type", "")))
    except TimeoutError:
        return done(
            "timeout",
            f"error: the {tool.name} tool did not answer within {tool.timeoutSeconds:g} seconds",
        )
    except aiohttp.ClientError as e:
        return done(
            "error", f"error: the {tool.name} tool could not be reached ({type(e).__name__})"
        )
    except Exception as e:  # never let a tool break the session
        log.exception("tool %s failed", tool.name)
        return done("error", f"error: the {tool.name} tool failed ({type(e).__name__})")
    finally:
        if own:
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
