"""HTTP tools against a real local aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from livekit.agents import llm

from voicefleet_contract.config import Tool, ToolHeader
from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.tools import (
    MAX_REDIRECTS,
    MAX_RESULT_CHARS,
    call_tool,
    make_tool,
    result_text,
)


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

    async def redirect_same(req: web.Request) -> web.Response:
        await record(req)
        raise web.HTTPTemporaryRedirect("/ok")

    async def redirect_other(req: web.Request) -> web.Response:
        await record(req)
        # The same server under another name: another host, whatever it resolves to.
        raise web.HTTPTemporaryRedirect(f"http://localhost:{req.url.port}/ok")

    async def redirect_metadata(req: web.Request) -> web.Response:
        await record(req)
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def redirect_loop(req: web.Request) -> web.Response:
        await record(req)
        raise web.HTTPTemporaryRedirect("/loop")

    app = web.Application()
    for path, h in [
        ("/redirect-same", redirect_same),
        ("/redirect-other", redirect_other),
        ("/redirect-metadata", redirect_metadata),
        ("/loop", redirect_loop),
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


class FakeDNS(AbstractResolver):
    """Names -> addresses, as a cluster's DNS would answer (nothing leaves the host)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host, host=a, port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET, proto=0, flags=0,
            )
            for a in self.table[host]
        ]  # fmt: skip

    async def close(self) -> None:
        pass


async def test_a_name_resolving_to_a_metadata_address_is_refused_at_call_time(
    endpoint: Endpoint,
) -> None:
    """The spec check sees only the name; the worker checks what DNS says, and connects
    only to addresses it checked."""
    port = int(endpoint.url.rsplit(":", 1)[1])
    dns = FakeDNS(
        {
            "orders.test": ["127.0.0.1"],
            "evil.test": ["169.254.169.254"],
            "mixed.test": ["127.0.0.1", "fe80::1"],
            "alibaba.test": ["100.100.100.200"],
        }
    )
    ok = Tool(name="t", description="d", url=f"http://orders.test:{port}/ok")
    res = await call_tool(ok, {"orderId": "1"}, resolver=dns)
    assert res.outcome == "ok", res.text
    for host in ("evil.test", "mixed.test", "alibaba.test"):
        bad = replace(ok, url=f"http://{host}:{port}/ok")
        res = await call_tool(bad, {"orderId": "2"}, resolver=dns)
        assert res.outcome == "refused" and "not allowed" in res.text, res.text
    assert len(endpoint.received) == 1  # none of the refused ones reached anything
    assert dns.asked == ["orders.test", "evil.test", "mixed.test", "alibaba.test"]


async def test_an_address_written_in_the_url_is_refused_without_dns() -> None:
    """A config from before the check (or written by hand): refused before any lookup."""
    dns = FakeDNS({})
    for url in ("http://169.254.169.254/latest", "http://[fe80::1]/", "http://2852039166/"):
        tool = Tool(name="t", description="d", url=url)
        res = await call_tool(tool, {}, resolver=dns)
        assert res.outcome == "refused" and "link-local" in res.text, (url, res.text)
    assert dns.asked == []


async def test_redirects_are_followed_only_to_the_same_host(endpoint: Endpoint) -> None:
    res = await call_tool(endpoint.tool("/redirect-same"), {"orderId": "7"})
    assert res.outcome == "ok" and json.loads(res.text)["orderId"] == "7"  # 307 keeps the POST
    for path, host in (("/redirect-other", "localhost"), ("/redirect-metadata", "169.254.169.254")):
        res = await call_tool(endpoint.tool(path), {"orderId": "8"})
        assert res.outcome == "refused", res.text
        assert f"redirected to another host ({host}); not followed" in res.text
    before = len(endpoint.received)
    res = await call_tool(endpoint.tool("/loop"), {})
    assert res.outcome == "refused" and f"more than {MAX_REDIRECTS}" in res.text
    assert len(endpoint.received) - before == MAX_REDIRECTS + 1


async def test_tool_headers_come_from_the_environment_and_are_never_echoed(
    endpoint: Endpoint,
) -> None:
    tool = replace(
        endpoint.tool("/ok"),
        headers=(ToolHeader("Authorization", "VOICEFLEET_TOOL_0_HEADER_0"),),
    )
    env = {"VOICEFLEET_TOOL_0_HEADER_0": "Bearer tok-123"}
    res = await call_tool(tool, {"orderId": "1"}, headers={"X-Voicefleet-Room": "r"}, environ=env)
    assert res.outcome == "ok"
    assert endpoint.headers[-1]["Authorization"] == "Bearer tok-123"
    assert endpoint.headers[-1]["X-Voicefleet-Room"] == "r"
    # Not set in this worker: not called, and the answer names the header, not a value.
    res = await call_tool(tool, {"orderId": "2"}, environ={})
    assert res.outcome == "refused" and "Authorization header has no value" in res.text
    assert len(endpoint.received) == 1
    # Redirected to another host: the header does not go there.
    res = await call_tool(
        replace(tool, url=tool.url.replace("/ok", "/redirect-other")), {}, environ=env
    )
    assert res.outcome == "refused" and len(endpoint.received) == 2
