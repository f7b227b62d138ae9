"""Shared test data: a valid VoiceAgent and helpers (no cluster needed)."""

from __future__ import annotations

import copy
from typing import Any

from voicefleet_contract import API_VERSION, KIND

LIVEKIT_URL = "ws://127.0.0.1:7880"
OPENAI_BASE_URL = "http://127.0.0.1:8765/v1"


def minimal_spec() -> dict[str, Any]:
    """The least a user must write."""
    return {
        "livekit": {"url": LIVEKIT_URL, "credentialsSecret": "livekit"},
        "model": {"apiKeySecret": {"name": "openai"}},
    }


def full_spec() -> dict[str, Any]:
    return {
        "agentName": "support-agent",
        "livekit": {"url": LIVEKIT_URL, "credentialsSecret": "livekit", "apiKeyKey": "key"},
        "model": {
            "model": "gpt-realtime",
            "voice": "cedar",
            "instructions": "You are a friendly support agent.",
            "modalities": ["audio", "text"],
            "turnDetection": {"type": "semantic_vad", "eagerness": "high"},
            "inputAudioTranscription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
            "inputAudioNoiseReduction": "near_field",
            "speed": 1.1,
            "toolChoice": "auto",
            "apiKeySecret": {"name": "openai", "key": "token"},
            "baseURL": OPENAI_BASE_URL,
        },
        "tools": [
            {
                "name": "lookup_order",
                "description": "Look up an order by id",
                "url": "http://orders.shop.svc/lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"orderId": {"type": "string"}},
                    "required": ["orderId"],
                },
            }
        ],
        "sessions": {"maxPerWorker": 4, "drainTimeoutSeconds": 600},
        "autoscaling": {"mode": "builtin", "minReplicas": 2, "maxReplicas": 20},
        "failover": {"enabled": True},
        "template": {
            "image": "registry.example/agent:1.2",
            "env": [{"name": "EXTRA", "value": "1"}],
            "labels": {"team": "support"},
            "annotations": {"example.com/owner": "support"},
            "nodeSelector": {"pool": "voice"},
            "tolerations": [{"key": "voice", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        },
    }


def body(spec: dict[str, Any], name: str = "support", namespace: str = "voice") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "1f0e4a7c-0000-4000-8000-000000000001",
            "generation": 1,
        },
        "spec": copy.deepcopy(spec),
    }
