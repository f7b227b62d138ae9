"""Traces go to the OTLP endpoint only when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from voicefleet_contract import Env
from voicefleet_worker.config import load_settings
from voicefleet_worker.tracing import setup_tracing

from .util import agent_config, worker_env, write_config


def test_off_without_endpoint(tmp_path: Path) -> None:
    s = load_settings(worker_env(write_config(tmp_path, agent_config())))
    assert setup_tracing(s) is None


async def test_spans_exported_to_the_otlp_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received = asyncio.Event()
    paths: list[str] = []

    async def collect(req: web.Request) -> web.Response:
        paths.append(req.path)
        await req.read()
        received.set()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        monkeypatch.setenv(Env.OTLP_ENDPOINT, endpoint)
        s = load_settings(
            worker_env(write_config(tmp_path, agent_config()), **{Env.OTLP_ENDPOINT: endpoint})
        )
        provider = setup_tracing(s)
        assert provider is not None
        with provider.get_tracer("test").start_as_current_span("voicefleet.session"):
            pass
        await asyncio.to_thread(provider.force_flush)
        await asyncio.wait_for(received.wait(), 10)
        await asyncio.to_thread(provider.shutdown)
        assert paths == ["/v1/traces"]
    finally:
        await runner.cleanup()
