"""`python -m voicefleet_worker` / `voicefleet-worker`, and `run()` for custom agents.

Exit codes: 0 after a clean stop or drain, 1 when the worker failed (e.g. LiveKit
unreachable after every retry), 2 for invalid configuration (one line on stderr naming
the field; no secret is ever printed).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import Mapping
from typing import NoReturn

from voicefleet_contract.config import ConfigError
from voicefleet_contract.logs import setup_logging

from .agent_module import load_agent
from .config import Settings, load_settings
from .job_runtime import Prewarm, Runtime
from .lifecycle import serve
from .sdk import Entrypoint, livekit_entrypoint, realtime_agent
from .tracing import setup_tracing

EXIT_CONFIG = 2


def load_or_exit(env: Mapping[str, str] | None = None) -> Settings:
    try:
        return load_settings(env)
    except ConfigError as e:
        print(f"voicefleet-worker: invalid configuration: {e.field}: {e.message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def agent_or_exit(settings: Settings) -> tuple[Entrypoint, Prewarm | None]:
    """`VOICEFLEET_AGENT`'s livekit-agents module, or the stock Realtime agent."""
    if settings.agent_module is None:
        return realtime_agent, None
    try:
        agent = load_agent(settings.agent_module)
    except ConfigError as e:
        print(f"voicefleet-worker: invalid configuration: {e.field}: {e.message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    # a partial of module-level functions: it pickles into a job process
    return functools.partial(livekit_entrypoint, agent.entrypoint), agent.prewarm


def run(entrypoint: Entrypoint | None = None, env: Mapping[str, str] | None = None) -> NoReturn:
    """Run a voicefleet worker with `entrypoint(job)` as each session's code.

    The default entrypoint is `VOICEFLEET_AGENT`'s livekit-agents module if set, else the
    configured Realtime agent. Either gets the same configuration loading, session-based
    load, metrics, /sessions, draining and health.
    """
    settings = load_or_exit(env)
    setup_logging(settings.log_format, secrets=settings.secrets.values())
    prewarm: Prewarm | None = None
    if entrypoint is None:
        entrypoint, prewarm = agent_or_exit(settings)
    runtime = Runtime(settings, tracer_provider=setup_tracing(settings))
    code = asyncio.run(serve(runtime, entrypoint, prewarm))
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Leave without interpreter teardown once logs are out.

    livekit rtc's native threads can still be delivering callbacks for rooms the worker
    just left; if Python's finalisation runs under them, a Rust panic aborts the process
    (SIGABRT) and a clean drain would report exit code -6. Everything the worker owns is
    already closed by `serve`, so skipping teardown loses nothing.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def main() -> NoReturn:
    run()
