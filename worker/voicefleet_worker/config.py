"""Worker settings: the operator-rendered `agent.json` plus the pod's environment.

`load_settings(env)` is pure (it reads only the mapping and the file it names) and raises
`ConfigError` naming the bad field (`model.voice`, or an env var like `LIVEKIT_API_KEY`).
Secrets live in `Secrets`, whose repr never shows them.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from voicefleet_contract import (
    AGENT_MODULE_RE,
    DEFAULT_BIND_ADDRESS,
    HEALTH_PORT,
    JOB_EXECUTORS,
    METRICS_PORT,
    Env,
)
from voicefleet_contract.config import AgentConfig, ConfigError, parse_config

from .resume import parse_key

OPENAI_BASE_URL_ENV: Final = "OPENAI_BASE_URL"
LOG_FORMATS: Final = ("json", "text")


def default_job_executor(agent_module: str | None) -> str:
    """Threads for the stock Realtime agent (all I/O: measured cheaper in CPU and memory
    per call, bench/results/call.json); processes for an agent module of one's own, whose
    plugins may hold the GIL (local VAD, turn detection) or crash, as livekit-agents does.
    docs/worker.md, "Where jobs run"."""
    return "process" if agent_module else "thread"


@dataclass(frozen=True)
class Secrets:
    livekit_api_key: str = field(repr=False)
    livekit_api_secret: str = field(repr=False)
    # "" for an agent module of one's own: its plugins read their own keys.
    openai_api_key: str = field(repr=False)
    # From the operator's worker-keys Secret; None when not set (a worker run by hand):
    # no resume summary is kept without a key, /sessions is open without a token.
    resume_key: bytes | None = field(default=None, repr=False)
    sessions_token: str | None = field(default=None, repr=False)

    def values(self) -> tuple[str, ...]:
        every = (self.livekit_api_key, self.livekit_api_secret, self.openai_api_key)
        return tuple(v for v in (*every, self.sessions_token) if v)


@dataclass(frozen=True)
class Settings:
    config: AgentConfig
    secrets: Secrets
    livekit_url: str
    pod_ip: str  # "" outside a pod; logged, never bound
    metrics_port: int
    health_port: int
    bind_address: str = DEFAULT_BIND_ADDRESS
    log_format: str = "text"
    pod_name: str = ""
    pod_namespace: str = ""
    openai_base_url: str | None = None  # config.model.baseURL, else OPENAI_BASE_URL
    otlp_endpoint: str | None = None
    job_executor: str = "thread"  # one of JOB_EXECUTORS
    agent_module: str | None = None  # VOICEFLEET_AGENT: a livekit-agents module to run


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(name, "environment variable is required")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a port number; got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(name, f"must be a port number (0-65535); got {port}")
    return port


def _ip(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ConfigError(name, f"must be an IP address; got {raw!r}") from None
    return raw


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip() or default
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def _agent_module(env: Mapping[str, str]) -> str | None:
    value = env.get(Env.AGENT, "").strip() or None
    if value is not None and not AGENT_MODULE_RE.match(value):
        raise ConfigError(
            Env.AGENT, f"must be <module>[:<attribute>], e.g. my_agent:server; got {value!r}"
        )
    return value


def _resume_key(env: Mapping[str, str]) -> bytes | None:
    raw = env.get(Env.RESUME_KEY, "").strip()
    if not raw:
        return None
    try:
        return parse_key(raw)
    except ValueError as e:
        raise ConfigError(Env.RESUME_KEY, str(e)) from None


def read_config_file(path: str) -> AgentConfig:
    """Read and validate agent.json; file and JSON errors name `VOICEFLEET_CONFIG`."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(Env.CONFIG_FILE, f"file not found: {path}") from None
    except OSError as e:
        raise ConfigError(Env.CONFIG_FILE, f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(Env.CONFIG_FILE, f"{path} is not valid JSON: {e}") from None
    return parse_config(data)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    config = read_config_file(_required(env, Env.CONFIG_FILE))
    agent = _agent_module(env)
    secrets = Secrets(
        livekit_api_key=_required(env, Env.LIVEKIT_API_KEY),
        livekit_api_secret=_required(env, Env.LIVEKIT_API_SECRET),
        # The stock agent talks to the Realtime API; a module of one's own may not.
        openai_api_key=(
            env.get(Env.OPENAI_API_KEY, "").strip() if agent else _required(env, Env.OPENAI_API_KEY)
        ),
        resume_key=_resume_key(env),
        sessions_token=env.get(Env.SESSIONS_TOKEN, "").strip() or None,
    )
    log_format = _choice(env, Env.LOG_FORMAT, LOG_FORMATS, "text")
    return Settings(
        config=config,
        secrets=secrets,
        # the env var (the operator's spec.livekit.url) wins; the config carries the same URL
        livekit_url=env.get(Env.LIVEKIT_URL, "").strip() or config.livekitURL,
        pod_ip=_ip(env, Env.POD_IP, ""),
        metrics_port=_port(env, Env.METRICS_PORT, METRICS_PORT),
        health_port=_port(env, Env.HEALTH_PORT, HEALTH_PORT),
        # All addresses by default: the pod's network namespace isolates them.
        bind_address=_ip(env, Env.BIND_ADDRESS, DEFAULT_BIND_ADDRESS),
        log_format=log_format,
        pod_name=env.get(Env.POD_NAME, ""),
        pod_namespace=env.get(Env.POD_NAMESPACE, "") or config.namespace,
        openai_base_url=config.model.baseURL or env.get(OPENAI_BASE_URL_ENV, "").strip() or None,
        otlp_endpoint=env.get(Env.OTLP_ENDPOINT, "").strip() or None,
        job_executor=_choice(env, Env.JOB_EXECUTOR, JOB_EXECUTORS, default_job_executor(agent)),
        agent_module=agent,
    )
