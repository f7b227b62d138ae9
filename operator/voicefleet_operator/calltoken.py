"""What the call page may hand a browser: the VoiceAgents it lists, and a join token.

Pure decisions for `callpage.py` (plain data in and out, table-tested): which VoiceAgents
a caller may pick, how a request names one, and the token that puts the caller alone in a
new room with that VoiceAgent's agent dispatched by name (LiveKit's token dispatch, as the
simulated caller does). The token grants that one room only, for a short time, so a page
open to anyone who reaches it can start calls to listed agents and do nothing else.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from livekit import api

from .spec import DNS1123_SUBDOMAIN_RE
from .status import ready_condition

TOKEN_TTL: Final = timedelta(minutes=10)  # long enough to join; LiveKit checks it at join only
MAX_BODY: Final = 4096


class BadRequest(ValueError):
    """A request the page cannot serve; the message names the field."""


@dataclass(frozen=True)
class Agent:
    namespace: str
    name: str
    agent_name: str  # what LiveKit dispatches (spec.agentName, default metadata.name)
    ready: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "agentName": self.agent_name,
            "ready": self.ready,
        }


@dataclass(frozen=True)
class Grant:
    room: str
    identity: str
    token: str


def agents_from(objects: Iterable[Mapping[str, Any]]) -> list[Agent]:
    """The VoiceAgents as the page lists them, sorted by namespace and name."""
    out = []
    for o in objects:
        meta = o.get("metadata") or {}
        spec = o.get("spec") or {}
        name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        if not name or not ns:
            continue
        ready = ready_condition(o.get("status") or {}).get("status") == "True"
        out.append(Agent(ns, name, str(spec.get("agentName") or name), ready))
    return sorted(out, key=lambda a: (a.namespace, a.name))


def parse_call(body: bytes) -> tuple[str, str]:
    """(namespace, name) from a POST api/token body: {"namespace": ..., "name": ...}."""
    if len(body) > MAX_BODY:
        raise BadRequest(f"body: larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise BadRequest("body: not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("body: must be an object with namespace and name")
    out = []
    for field in ("namespace", "name"):
        value = doc.get(field)
        if not isinstance(value, str) or len(value) > 253 or not DNS1123_SUBDOMAIN_RE.match(value):
            raise BadRequest(f"{field}: must be a Kubernetes object name")
        out.append(value)
    return out[0], out[1]


def pick(agents: Iterable[Agent], namespace: str, name: str) -> Agent:
    """The listed VoiceAgent a request names: only those can be dispatched."""
    for a in agents:
        if (a.namespace, a.name) == (namespace, name):
            return a
    raise LookupError(f"no VoiceAgent {namespace}/{name} is listed")


def room_for(agent: Agent, suffix: str | None = None) -> str:
    """A new room per call: LiveKit creates it on join and dispatches the agent into it."""
    return f"call-{agent.name}-{suffix or secrets.token_hex(4)}"


def grant(agent: Agent, api_key: str, api_secret: str, suffix: str | None = None) -> Grant:
    """A join token for one new room, which dispatches the agent when the room starts."""
    room = room_for(agent, suffix)
    identity = f"caller-{secrets.token_hex(4)}"
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name("browser caller")
        .with_ttl(TOKEN_TTL)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
        .with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent.agent_name)])
        )
        .to_jwt()
    )
    return Grant(room, identity, token)
