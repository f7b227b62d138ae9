"""HTTP tools against a real local aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from livekit.agents import llm

from voicefleet_contract.config import Tool
from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.tools import MAX_RESULT_CHARS, call_tool, make_tool, result_text


class Endpoint:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self.url = ""

    def tool(self, path: str, timeout: float = 5.0) -> Tool:
        return Tool(
            name="lookup_order",
            description="Look up an order",
            url=f"{self.url}{path}",
            parameters={"type": "object", "properties": {"orderId": {"type": "string"}}},
            timeoutSeconds=timeout,
        )


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint()

    async def record(req: web.Request) -> None:
        ep.received.append(await req.json())
        ep.headers.append(dict(req.headers))

    async def ok(req: web.Request) -> web.Response:
        await record(req)
        return web.json_response({"status": "shipped", "orderId": ep.received[-1].get("orderId")})

    async def text(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(text="it shipped yesterday")

    async def broken_json(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(text="{oops", content_type="application/json")

    async def fail(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(status=503, text="upstream down")

    async def slow(req: web.Request) -> web.Response:
        await record(req)
        await ep.release.wait()
        return web.json_response({})

    async def huge(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(text="x" * (MAX_RESULT_CHARS * 2))

    app = web.Application()
    for path, h in [
        ("/ok", ok),
        ("/text", text),
        ("/broken", broken_json),
        ("/fail", fail),
        ("/slow", slow),
        ("/huge", huge),
    ]:
        app.router.add_post(path, h)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ep.url = f"http://127.0.0.1:{port}"
    yield ep
    ep.release.set()
    await runner.cleanup()


async def test_posts_args_and_returns_json(endpoint: Endpoint) -> None:
    res = await call_tool(
        endpoint.tool("/ok"), {"orderId": "A-17"}, headers={"X-Voicefleet-Room": "r1"}
    )
    assert res.outcome == "ok"
    assert endpoint.received == [{"orderId": "A-17"}]
    assert endpoint.headers[0]["X-Voicefleet-Room"] == "r1"
    assert json.loads(res.text) == {"status": "shipped", "orderId": "A-17"}


async def test_plain_text_and_non_json_answers_are_passed_as_text(endpoint: Endpoint) -> None:
    res = await call_tool(endpoint.tool("/text"), {})
    assert (res.outcome, res.text) == ("ok", "it shipped yesterday")
    res = await call_tool(endpoint.tool("/broken"), {})
    assert (res.outcome, res.text) == ("ok", "{oops")


async def test_http_error_is_a_clear_string(endpoint: Endpoint) -> None:
    res = await call_tool(endpoint.tool("/fail"), {"orderId": "1"})
    assert res.outcome == "http_error"
    assert "HTTP 503" in res.text and "lookup_order" in res.text and res.text.startswith("error:")


async def test_timeout(endpoint: Endpoint) -> None:
    res = await call_tool(endpoint.tool("/slow", timeout=0.3), {"orderId": "1"})
    assert res.outcome == "timeout"
    assert "0.3 seconds" in res.text
    assert endpoint.received == [{"orderId": "1"}]


async def test_unreachable(endpoint: Endpoint) -> None:
    tool = Tool(name="t", description="d", url="http://127.0.0.1:1/x", timeoutSeconds=5)
    res = await call_tool(tool, {})
    assert res.outcome == "error" and res.text.startswith("error:")


async def test_huge_answer_is_truncated(endpoint: Endpoint) -> None:
    res = await call_tool(endpoint.tool("/huge"), {})
    assert res.outcome == "ok" and len(res.text) < MAX_RESULT_CHARS + 100


def test_result_text() -> None:
    assert result_text('"a string"', "application/json") == "a string"
    assert result_text('{"a": 1}', "text/plain") == '{"a":1}'
    assert result_text("plain", "text/plain") == "plain"


async def test_function_tool_schema_and_metrics(endpoint: Endpoint) -> None:
    metrics = WorkerMetrics()
    tool = endpoint.tool("/ok")
    ft = make_tool(tool, metrics)
    assert isinstance(ft, llm.RawFunctionTool)
    assert ft.info.name == "lookup_order"
    assert ft.info.raw_schema["parameters"] == tool.parameters
    assert ft.info.raw_schema["description"] == "Look up an order"
    out = await ft(raw_arguments={"orderId": "B-2"})
    assert json.loads(out)["orderId"] == "B-2"
    fail = make_tool(endpoint.tool("/fail"), metrics)
    assert (await fail(raw_arguments={})).startswith("error:")
    value = metrics.registry.get_sample_value
    assert (
        value("voicefleet_worker_tool_calls_total", {"tool": "lookup_order", "outcome": "ok"}) == 1
    )
    assert (
        value(
            "voicefleet_worker_tool_calls_total", {"tool": "lookup_order", "outcome": "http_error"}
        )
        == 1
    )
    assert (
        value("voicefleet_worker_tool_call_duration_seconds_count", {"tool": "lookup_order"}) == 2
    )
