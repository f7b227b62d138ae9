"""One agent per agent name per room: which of two agents of the same name leaves. Pure.

LiveKit can put a second agent of one name into a room without anyone asking twice: on a
multi-node LiveKit, a room whose node died is re-created on another node and its
room-level dispatch (`RoomConfiguration.agents`, what SIP dispatch rules and caller
tokens use) is run again, while the original agent re-joins the same room through the
load balancer (docs/operations.md, "Multi-node LiveKit"). Neither worker can know at
accept time that the other is coming, so the room decides: every voicefleet agent
carries, from its join token on, the time its worker accepted the job; when agents of
one name meet in a room, all but the one accepted last leave, each deciding alone from
the same attributes, so exactly one stays whatever order they see each other in.

The last accepted stays, not the first, because a later job was dispatched by someone
who took the earlier agent for gone (LiveKit re-running the room's dispatch, or the
operator's failover), and because the earlier one may be exactly that: a SIGKILLed
agent is listed in the room for ~20 s until LiveKit times it out, and a dead agent
cannot leave. An agent that is alive and sees a newer one leaves, and the newer one
also removes it through the LiveKit API (whichever comes first); the newer one resumes
the conversation from the room's summary (docs/failover.md) when resume is on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

# Set by livekit-agents on every agent it joins to a room (and by livekit-server as
# `lk.agent_name`).
AGENT_NAME_ATTRIBUTE: Final = "lk.agent.name"
# Set by voicefleet workers when they accept a job: unix milliseconds, decimal. In the
# join token, so it survives the agent's reconnections (a full re-join uses the token).
ACCEPTED_AT_ATTRIBUTE: Final = "voicefleet.accepted_at"


@dataclass(frozen=True, order=True)
class AgentMark:
    """What decides who stays: ordered by acceptance, then identity (unique in a room)."""

    accepted_at_ms: int
    identity: str


def accept_attributes(now: float) -> dict[str, str]:
    """The participant attributes a worker asks for when it accepts a job at `now`."""
    return {ACCEPTED_AT_ATTRIBUTE: str(int(now * 1000))}


def mark_of(identity: str, attributes: Mapping[str, str]) -> AgentMark | None:
    """The agent's mark, or None for an agent without one (not a voicefleet worker, or
    one from before this rule: never made to leave, never a reason to leave)."""
    raw = attributes.get(ACCEPTED_AT_ATTRIBUTE, "")
    if not raw.isdigit() or not identity:
        return None
    return AgentMark(int(raw), identity)


def yields_to(me: AgentMark, others: Iterable[AgentMark]) -> AgentMark | None:
    """The agent `me` must leave the room for (the last accepted of the same name), or
    None when `me` stays. `others`: the other agents of my name in the room."""
    last = max((o for o in others if o.identity != me.identity), default=None)
    return last if last is not None and last > me else None


def outranks(me: AgentMark, others: Iterable[AgentMark]) -> list[AgentMark]:
    """The agents `me` may remove from the room (it stays, they must go): every other one
    accepted before it, when `me` is the last accepted. A dead agent cannot leave by
    itself, and a live one may be slow to see the newer one: the newer one removes it."""
    rest = [o for o in others if o.identity != me.identity]
    if yields_to(me, rest) is not None:
        return []
    return sorted(o for o in rest if o < me)
