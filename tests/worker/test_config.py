"""Config loading: agent.json + env -> Settings, or one line naming the bad field and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicefleet_contract import Env
from voicefleet_contract.config import ConfigError
from voicefleet_worker.config import load_settings

from .util import OPENAI_KEY, SECRET, agent_config, worker_env, write_config


def test_loads_config_and_env(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, agent_config(model={"voice": "cedar", "baseURL": "http://127.0.0.1:9/v1"})
    )
    s = load_settings(worker_env(path, **{Env.METRICS_PORT: "9464", Env.HEALTH_PORT: "8081"}))
    assert s.config.agentName == "support-agent"
    assert s.config.model.voice == "cedar"
    assert s.config.sessions.maxPerWorker == 2
    assert (s.pod_ip, s.metrics_port, s.health_port) == ("127.0.0.1", 9464, 8081)
    assert s.bind_address == "0.0.0.0"  # every address of the pod, not only its IP
    assert s.openai_base_url == "http://127.0.0.1:9/v1"  # the config's baseURL wins
    assert s.secrets.livekit_api_secret == SECRET
    assert SECRET not in repr(s) and OPENAI_KEY not in repr(s)


def test_openai_base_url_from_env_when_config_has_none(tmp_path: Path) -> None:
    path = write_config(tmp_path, agent_config())
    s = load_settings(worker_env(path, OPENAI_BASE_URL="http://127.0.0.1:5/v1"))
    assert s.openai_base_url == "http://127.0.0.1:5/v1"


@pytest.mark.parametrize(
    ("missing", "field"),
    [
        (Env.CONFIG_FILE, Env.CONFIG_FILE),
        (Env.LIVEKIT_API_KEY, Env.LIVEKIT_API_KEY),
        (Env.LIVEKIT_API_SECRET, Env.LIVEKIT_API_SECRET),
        (Env.OPENAI_API_KEY, Env.OPENAI_API_KEY),
    ],
)
def test_missing_env_names_it(tmp_path: Path, missing: str, field: str) -> None:
    env = worker_env(write_config(tmp_path, agent_config()))
    del env[missing]
    with pytest.raises(ConfigError) as e:
        load_settings(env)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("env_over", "field"),
    [
        ({Env.POD_IP: "not-an-ip"}, Env.POD_IP),
        ({Env.BIND_ADDRESS: "localhost"}, Env.BIND_ADDRESS),
        ({Env.BIND_ADDRESS: "0.0.0.0:9464"}, Env.BIND_ADDRESS),
        ({Env.METRICS_PORT: "http"}, Env.METRICS_PORT),
        ({Env.HEALTH_PORT: "70000"}, Env.HEALTH_PORT),
        ({Env.LOG_FORMAT: "xml"}, Env.LOG_FORMAT),
        ({Env.JOB_EXECUTOR: "fork"}, Env.JOB_EXECUTOR),
        ({Env.AGENT: "my-agent.py"}, Env.AGENT),
        ({Env.AGENT: "my_agent:server:extra"}, Env.AGENT),
    ],
)
def test_bad_env_names_it(tmp_path: Path, env_over: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(worker_env(write_config(tmp_path, agent_config()), **env_over))
    assert e.value.field == field


@pytest.mark.parametrize(
    ("env_over", "executor"),
    [
        ({}, "thread"),  # the stock Realtime agent: measured cheaper in threads
        ({Env.AGENT: "my_agent"}, "process"),  # one's own agent module: isolated
        ({Env.AGENT: "my_agent", Env.JOB_EXECUTOR: "thread"}, "thread"),
        ({Env.JOB_EXECUTOR: "process"}, "process"),
    ],
)
def test_where_jobs_run(tmp_path: Path, env_over: dict[str, str], executor: str) -> None:
    s = load_settings(worker_env(write_config(tmp_path, agent_config()), **env_over))
    assert s.job_executor == executor
    assert s.agent_module == env_over.get(Env.AGENT)


def test_an_agent_module_of_ones_own_needs_no_openai_key(tmp_path: Path) -> None:
    """model.apiKeySecret is optional with spec.agent.module: the worker starts without
    OPENAI_API_KEY then (the module's plugins read their own keys); the stock agent not."""
    env = worker_env(write_config(tmp_path, agent_config()), **{Env.AGENT: "pkg.agent:server"})
    del env[Env.OPENAI_API_KEY]
    s = load_settings(env)
    assert s.agent_module == "pkg.agent:server" and s.secrets.openai_api_key == ""
    assert "" not in s.secrets.values()  # nothing to redact is not "redact everything"
    del env[Env.AGENT]
    with pytest.raises(ConfigError) as e:
        load_settings(env)
    assert e.value.field == Env.OPENAI_API_KEY


@pytest.mark.parametrize("address", ["127.1.2.3", "::", "0.0.0.0"])
def test_explicit_bind_address(tmp_path: Path, address: str) -> None:
    s = load_settings(
        worker_env(write_config(tmp_path, agent_config()), **{Env.BIND_ADDRESS: f" {address} "})
    )
    assert s.bind_address == address


def test_no_pod_ip_outside_a_pod(tmp_path: Path) -> None:
    env = worker_env(write_config(tmp_path, agent_config()))
    del env[Env.POD_IP]
    assert load_settings(env).pod_ip == ""


def test_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "agent.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError) as e:
        load_settings(worker_env(bad))
    assert e.value.field == Env.CONFIG_FILE
    with pytest.raises(ConfigError) as e:
        load_settings(worker_env(tmp_path / "missing.json"))
    assert e.value.field == Env.CONFIG_FILE


def test_bad_config_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, agent_config(model={"turnDetection": {"type": "loud"}}))
    with pytest.raises(ConfigError) as e:
        load_settings(worker_env(path))
    assert e.value.field == "model.turnDetection.type"


def _run_worker(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIVEKIT_", "OPENAI_", "VOICEFLEET_"))
    }
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "voicefleet_worker"],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_process_exits_2_with_one_line_naming_the_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, agent_config(sessions={"maxPerWorker": 0}))
    res = _run_worker(worker_env(path), tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "sessions.maxPerWorker" in lines[0]


def test_process_missing_secret_never_prints_secrets(tmp_path: Path) -> None:
    env = worker_env(write_config(tmp_path, agent_config()))
    del env[Env.OPENAI_API_KEY]
    res = _run_worker(env, tmp_path)
    assert res.returncode == 2
    assert Env.OPENAI_API_KEY in res.stderr
    assert SECRET not in res.stderr + res.stdout
