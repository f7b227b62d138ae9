"""A VoiceAgent's LiveKit credentials from its Secret, as read by the loops that call
LiveKit's API themselves (failover, telephony). Plain data: the values never print."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

from .spec import VoiceAgentSpec


@dataclass(frozen=True)
class SecretData:
    """A Secret's `data` (base64 values), as read. Never printed."""

    data: Mapping[str, str] = field(repr=False)


class NoSecret(Exception):
    """The Secret does not exist."""


def credentials_of(secret: SecretData, spec: VoiceAgentSpec) -> tuple[str, str] | None:
    """The VoiceAgent's LiveKit API key and secret from its Secret (None: not there)."""
    try:
        key = base64.b64decode(secret.data[spec.livekit.apiKeyKey]).decode().strip()
        value = base64.b64decode(secret.data[spec.livekit.apiSecretKey]).decode().strip()
    except (KeyError, ValueError):
        return None
    return (key, value) if key and value else None
