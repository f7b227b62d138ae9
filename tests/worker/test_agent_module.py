"""VOICEFLEET_AGENT: which entrypoint and prewarm a livekit-agents module gives, and errors
naming the variable for one that gives neither."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from voicefleet_contract import Env
from voicefleet_contract.config import ConfigError
from voicefleet_worker.agent_module import load_agent

SERVER = """
from livekit.agents import AgentServer, JobContext, JobProcess, cli

def prewarm(proc: JobProcess) -> None: ...

server = AgentServer(setup_fnc=prewarm)

@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None: ...

if __name__ == "__main__":
    cli.run_app(server)
"""
FUNCTION = """
from livekit.agents import JobContext, JobProcess

def prewarm(proc: JobProcess) -> None: ...

async def entrypoint(ctx: JobContext) -> None: ...

async def other(ctx: JobContext) -> None: ...
"""
NO_ENTRY = "from livekit.agents import AgentServer\nserver = AgentServer()\n"
TWO = "from livekit.agents import AgentServer\na = AgentServer()\nb = AgentServer()\n"
NOTHING = "x = 1\n"
BROKEN = "raise RuntimeError('boom')\n"


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"agent_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        return name

    return write


def test_an_agent_server_gives_its_rtc_session_and_setup(module: Callable[[str], str]) -> None:
    name = module(SERVER)
    got = load_agent(name)
    assert got.entrypoint.__name__ == "entrypoint" and got.prewarm is not None
    assert got.prewarm.__name__ == "prewarm"
    assert load_agent(f"{name}:server").entrypoint is got.entrypoint


def test_a_function_entrypoint_with_prewarm_beside_it(module: Callable[[str], str]) -> None:
    name = module(FUNCTION)
    got = load_agent(name)
    assert got.entrypoint.__name__ == "entrypoint"
    assert got.prewarm is not None and got.prewarm.__name__ == "prewarm"
    assert load_agent(f"{name}:other").entrypoint.__name__ == "other"


@pytest.mark.parametrize(
    ("source", "attr", "message"),
    [
        (NO_ENTRY, "", "no @rtc_session entrypoint"),
        (TWO, "", "several AgentServers"),
        (NOTHING, "", "no AgentServer and no entrypoint"),
        (NOTHING, ":x", "neither an AgentServer nor a function"),
        (NOTHING, ":missing", "no attribute 'missing'"),
        (BROKEN, "", "RuntimeError: boom"),
    ],
)
def test_what_is_not_an_agent_is_refused_naming_the_variable(
    module: Callable[[str], str], source: str, attr: str, message: str
) -> None:
    name = module(source)
    with pytest.raises(ConfigError) as e:
        load_agent(name + attr)
    assert e.value.field == Env.AGENT and message in e.value.message


def test_a_module_that_is_not_there() -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_agent_module'"):
        load_agent("no_such_agent_module")
