"""Shared helpers for worker tests: agent.json files and a worker environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voicefleet_contract import Env

SECRET = "a-livekit-secret-that-is-long-enough-1234"
OPENAI_KEY = "sk-test-not-a-real-key-5678"
# what the operator's worker-keys Secret holds: 32 bytes of base64, and a token
RESUME_KEY = "dm9pY2VmbGVldC10ZXN0LXJlc3VtZS1rZXktMzJieXQ="
SESSIONS_TOKEN = "test-sessions-token-0123456789"


def agent_config(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "namespace": "voice",
        "voiceAgent": "support",
        "agentName": "support-agent",
        "livekitURL": "ws://127.0.0.1:7880",
        "sessions": {"maxPerWorker": 2, "drainTimeoutSeconds": 30},
    }
    cfg.update(over)
    return cfg


def write_config(tmp: Path, cfg: dict[str, Any]) -> Path:
    path = tmp / "agent.json"
    path.write_text(json.dumps(cfg))
    return path


def worker_env(config_path: Path, **over: str) -> dict[str, str]:
    env = {
        Env.CONFIG_FILE: str(config_path),
        Env.LIVEKIT_URL: "ws://127.0.0.1:7880",
        Env.LIVEKIT_API_KEY: "devkey",
        Env.LIVEKIT_API_SECRET: SECRET,
        Env.OPENAI_API_KEY: OPENAI_KEY,
        Env.POD_IP: "127.0.0.1",
        Env.METRICS_PORT: "0",
        Env.HEALTH_PORT: "0",
        Env.RESUME_KEY: RESUME_KEY,
    }
    env.update(over)
    return env
