"""Bring your own agent: a module written the way livekit-agents' own examples are, run
unchanged by the voicefleet worker.

`VOICEFLEET_AGENT=<module>[:<attribute>]` names it (an importable module: installed with
`pip install` in an image built `FROM` ours, or on `PYTHONPATH`). What the module holds:
- an `AgentServer` with an `@server.rtc_session()` entrypoint (and its `setup_fnc`, the
  prewarm), found as `<attribute>` or as the module's one `AgentServer`; or
- an `entrypoint(ctx: JobContext)` function (`<attribute>`, default `entrypoint`), with
  an optional `prewarm(proc: JobProcess)` beside it, as for `WorkerOptions`.
Its `cli.run_app(...)` under `if __name__ == "__main__"` does not run on import. The
worker keeps its own `AgentServer` (agent name, load, draining, /sessions, metrics) and
runs the module's entrypoint and prewarm in it; the `AgentSession` the entrypoint starts is
observed for the worker's metrics.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from livekit.agents import AgentServer, JobContext, JobProcess

from voicefleet_contract import Env
from voicefleet_contract.config import ConfigError

from .lk_private import server_entrypoint

LiveKitEntrypoint = Callable[[JobContext], Awaitable[None]]
Setup = Callable[[JobProcess], Any]


@dataclass(frozen=True)
class AgentModule:
    name: str  # as configured, for logs
    entrypoint: LiveKitEntrypoint
    prewarm: Setup | None = None


def _from_server(name: str, server: AgentServer) -> AgentModule:
    entry = server_entrypoint(server)
    if entry is None:
        raise ConfigError(Env.AGENT, f"{name}: the AgentServer has no @rtc_session entrypoint")
    return AgentModule(name, entry, server.setup_fnc)


def load_agent(spec: str) -> AgentModule:
    """The entrypoint and prewarm `spec` names; ConfigError naming VOICEFLEET_AGENT when
    it does not import or holds neither form."""
    module_name, _, attr = spec.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module's own code failing
        raise ConfigError(
            Env.AGENT, f"cannot import {module_name!r}: {type(e).__name__}: {e}"
        ) from None
    if attr:
        obj = getattr(module, attr, None)
        if obj is None:
            raise ConfigError(Env.AGENT, f"{module_name} has no attribute {attr!r}")
        if isinstance(obj, AgentServer):
            return _from_server(spec, obj)
        if callable(obj):
            return AgentModule(spec, obj, getattr(module, "prewarm", None))
        raise ConfigError(Env.AGENT, f"{spec} is neither an AgentServer nor a function")
    servers = [v for v in vars(module).values() if isinstance(v, AgentServer)]
    if len(servers) == 1:
        return _from_server(spec, servers[0])
    if len(servers) > 1:
        raise ConfigError(Env.AGENT, f"{module_name} has several AgentServers: name one")
    entry = getattr(module, "entrypoint", None)
    if not callable(entry):
        raise ConfigError(
            Env.AGENT, f"{module_name} has no AgentServer and no entrypoint(ctx) function"
        )
    return AgentModule(spec, entry, getattr(module, "prewarm", None))
