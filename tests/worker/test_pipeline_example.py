"""examples/livekit-pipeline-agent: a Deepgram + Claude + Cartesia + Silero pipeline written
as livekit-agents' examples are (no OpenAI, nothing of voicefleet), run unchanged by the
worker's loader. What can run on this machine runs: the module loads as the worker loads
it, its prewarm loads Silero's model, and its entrypoint builds its session from
environment keys. A call through it needs the three vendors' internet services, which
this machine does not reach and has no stand-ins for: no test here makes one (a test
with nothing to assert would only look like coverage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from livekit.agents import AgentSession, JobExecutorType, JobProcess
from livekit.plugins import anthropic, cartesia, deepgram, silero

from voicefleet_worker.agent_module import load_agent

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "livekit-pipeline-agent"
KEYS = ("DEEPGRAM_API_KEY", "ANTHROPIC_API_KEY", "CARTESIA_API_KEY")


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for key in KEYS:  # not real keys: nothing here reaches the vendors
        monkeypatch.setenv(key, f"test-{key.lower()}")
    return load_agent("pipeline_agent")


def _proc() -> JobProcess:
    return JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)


def test_the_worker_loads_it_and_its_prewarm_loads_the_vad(pipeline: Any) -> None:
    assert pipeline.name == "pipeline_agent"
    assert pipeline.entrypoint.__name__ == "entrypoint"
    assert pipeline.prewarm is not None
    proc = _proc()
    pipeline.prewarm(proc)
    assert isinstance(proc.userdata["vad"], silero.VAD)


async def test_its_entrypoint_builds_a_non_openai_pipeline(
    pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entrypoint as the worker calls it, up to `session.start` (which would connect
    to the vendors): the session it starts is STT + LLM + TTS with the prewarmed VAD."""
    started: list[AgentSession[Any]] = []

    async def start(self: AgentSession[Any], *, agent: Any, room: Any, **_: Any) -> None:
        started.append(self)

    monkeypatch.setattr(AgentSession, "start", start)
    proc = _proc()
    pipeline.prewarm(proc)

    class Ctx:  # the two JobContext attributes the example reads
        room = object()

    ctx = Ctx()
    ctx.proc = proc  # type: ignore[attr-defined]
    await pipeline.entrypoint(ctx)
    (session,) = started
    assert isinstance(session.stt, deepgram.STT)
    assert isinstance(session.llm, anthropic.LLM)
    assert isinstance(session.tts, cartesia.TTS)
    assert session.vad is proc.userdata["vad"]
