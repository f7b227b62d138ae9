"""What a VoiceAgent's spec.telephony asks of LiveKit's SIP service, and the steps to get there.

Pure: `desired` turns the spec (with the SIP credentials read from Secrets) into the
trunks and the dispatch rule LiveKit should hold; `plan` compares them with what LiveKit
lists and returns the steps (create, update in place, delete), or a conflict: another
trunk or rule already routes one of these numbers. LiveKit itself refuses some of those
(two trunks for a number without AllowedNumbers, two rules for one trunk and PIN); others
it accepts silently and lets the more specific rule win, taking calls from whoever set up
the first: both are refused here, naming the object, unless `adopt` says to take it over.

Objects are ours when their metadata carries OWNER_KEY = "<namespace>/<name>"; their name
is "voicefleet/<namespace>/<name>", for people reading `lk sip ... list` and for workers
finding their outbound trunk (voicefleet_contract.telephony).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from voicefleet_contract.telephony import OWNER_KEY, sip_object_name

from .spec import SipAuth, Telephony


@dataclass(frozen=True)
class InboundTrunk:
    id: str
    name: str
    metadata: str
    numbers: tuple[str, ...]
    allowed_addresses: tuple[str, ...] = ()
    allowed_numbers: tuple[str, ...] = ()
    auth_username: str = ""
    auth_password: str = field(default="", repr=False)


@dataclass(frozen=True)
class OutboundTrunk:
    id: str
    name: str
    metadata: str
    address: str
    numbers: tuple[str, ...]
    transport: str = "auto"
    auth_username: str = ""
    auth_password: str = field(default="", repr=False)


@dataclass(frozen=True)
class DispatchRule:
    id: str
    name: str
    metadata: str
    trunk_ids: tuple[str, ...]
    kind: str  # individual | direct
    room: str  # the prefix (individual) or the room (direct)
    pin: str = ""
    agent_name: str = ""  # the agent the rule's room config dispatches
    job_metadata: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    inbound_numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Live:
    """What LiveKit lists."""

    inbound: tuple[InboundTrunk, ...] = ()
    outbound: tuple[OutboundTrunk, ...] = ()
    rules: tuple[DispatchRule, ...] = ()


@dataclass(frozen=True)
class Desired:
    inbound: InboundTrunk
    rule: DispatchRule  # trunk_ids: filled with the inbound trunk's id when applied
    outbound: OutboundTrunk | None
    adopt: bool


Kind = Literal["inbound", "outbound", "rule"]


@dataclass(frozen=True)
class Step:
    op: Literal["create", "update", "delete"]
    kind: Kind
    id: str = ""  # update, delete
    inbound: InboundTrunk | None = None
    outbound: OutboundTrunk | None = None
    rule: DispatchRule | None = None

    def describe(self) -> str:
        return f"{self.op} {self.kind}{' ' + self.id if self.id else ''}"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    conflict: str = ""  # why nothing is done: the other object, named
    kept: dict[Kind, str] = field(default_factory=dict)  # ids already right, left alone


@dataclass(frozen=True)
class Credentials:
    """SIP user names and passwords as read from the spec's Secrets."""

    inbound: tuple[str, str] | None = None
    outbound: tuple[str, str] | None = None


def owner_of(metadata: str) -> str | None:
    try:
        doc = json.loads(metadata) if metadata else None
    except ValueError:
        return None
    value = doc.get(OWNER_KEY) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def normalize(number: str) -> str:
    """A number as LiveKit buckets it for conflicts: digits only."""
    return "".join(c for c in number if c.isdigit())


def desired(
    owner: str, agent_name: str, t: Telephony, creds: Credentials = Credentials()
) -> Desired:
    meta = json.dumps({OWNER_KEY: owner}, sort_keys=True)
    name = sip_object_name(*owner.split("/", 1))
    user, password = creds.inbound or ("", "")
    inbound = InboundTrunk(
        "", name, meta, t.inbound.numbers, t.inbound.allowedAddresses,
        t.inbound.allowedNumbers, user, password,
    )  # fmt: skip
    d = t.dispatch
    room = d.roomName if d.type == "direct" else d.roomPrefix
    rule = DispatchRule(
        "", name, meta, (), d.type, room, d.pin, agent_name, d.metadata,
        tuple(sorted(d.attributes.items())),
    )  # fmt: skip
    outbound = None
    if t.outbound is not None:
        ouser, opassword = creds.outbound or ("", "")
        o = t.outbound
        outbound = OutboundTrunk(
            "", name, meta, o.address, o.numbers, o.transport, ouser, opassword
        )
    return Desired(inbound, rule, outbound, t.adopt)


def secret_refs(t: Telephony) -> list[tuple[str, SipAuth]]:
    """(which trunk, the Secret reference) for every credential the spec names."""
    refs = [("inbound", t.inbound.auth)]
    if t.outbound is not None:
        refs.append(("outbound", t.outbound.auth))
    return [(k, a) for k, a in refs if a is not None]


def _inbound_clash(a: InboundTrunk, b: InboundTrunk) -> bool:
    """LiveKit's rule: two trunks sharing a number collide when neither narrows callers
    (no AllowedNumbers), or both accept one same caller."""
    if not {normalize(n) for n in a.numbers} & {normalize(n) for n in b.numbers}:
        return False
    if not a.allowed_numbers and not b.allowed_numbers:
        return True
    return bool(
        {normalize(n) for n in a.allowed_numbers} & {normalize(n) for n in b.allowed_numbers}
    )


def _routes(rule: DispatchRule, trunk_id: str, numbers: Iterable[str]) -> bool:
    """A rule that takes calls for this trunk or for one of these numbers."""
    wanted = {normalize(n) for n in numbers}
    return (bool(trunk_id) and trunk_id in rule.trunk_ids) or bool(
        {normalize(n) for n in rule.inbound_numbers} & wanted
    )


def _label(kind: str, id_: str, name: str) -> str:
    return f"{kind} {id_}" + (f" ({name!r})" if name else "")


def _same(live: object, want: object) -> bool:
    return replace(live, id="") == want  # type: ignore[type-var]


def plan(want: Desired | None, owner: str, live: Live) -> Plan:
    """The steps from `live` to `want` (None: the VoiceAgent or its telephony is gone),
    creates and updates first, deletes last."""
    ours_in = [t for t in live.inbound if owner_of(t.metadata) == owner]
    ours_out = [t for t in live.outbound if owner_of(t.metadata) == owner]
    ours_rules = [r for r in live.rules if owner_of(r.metadata) == owner]
    if want is None:
        return Plan(
            tuple(Step("delete", "rule", r.id) for r in ours_rules)
            + tuple(Step("delete", "inbound", t.id) for t in ours_in)
            + tuple(Step("delete", "outbound", t.id) for t in ours_out)
        )

    steps: list[Step] = []
    deletes: list[Step] = []
    kept: dict[Kind, str] = {}

    # The inbound trunk: ours, or (adopt) the other one that takes these numbers.
    others = [t for t in live.inbound if t not in ours_in and _inbound_clash(t, want.inbound)]
    trunk = ours_in[0] if ours_in else None
    if trunk is None and others and want.adopt:
        trunk, others = others[0], others[1:]
    if others:
        t = others[0]
        return Plan(conflict=_conflict("inbound trunk", t.id, t.name, t.numbers, want.adopt))
    deletes += [Step("delete", "inbound", t.id) for t in ours_in[1:]]
    if trunk is None:
        steps.append(Step("create", "inbound", inbound=want.inbound))
    elif not _same(trunk, want.inbound):
        steps.append(Step("update", "inbound", trunk.id, inbound=want.inbound))
    else:
        kept["inbound"] = trunk.id

    # The dispatch rule: ours, or (adopt) the one routing this trunk or these numbers.
    trunk_id = trunk.id if trunk is not None else ""
    routing = [
        r for r in live.rules
        if r not in ours_rules and _routes(r, trunk_id, want.inbound.numbers)
    ]  # fmt: skip
    rule = ours_rules[0] if ours_rules else None
    if rule is None and routing and want.adopt:
        rule, routing = routing[0], routing[1:]
    if routing:
        r = routing[0]
        why = r.inbound_numbers or want.inbound.numbers
        return Plan(conflict=_conflict("dispatch rule", r.id, r.name, why, want.adopt))
    deletes = [Step("delete", "rule", r.id) for r in ours_rules[1:]] + deletes
    wanted_rule = replace(want.rule, trunk_ids=(trunk_id,) if trunk_id else ())
    if rule is None:
        steps.append(Step("create", "rule", rule=want.rule))
    elif not trunk_id or not _same(rule, wanted_rule):
        steps.append(Step("update", "rule", rule.id, rule=want.rule))
    else:
        kept["rule"] = rule.id

    # The outbound trunk: LiveKit lets numbers repeat across outbound trunks.
    if want.outbound is None:
        deletes += [Step("delete", "outbound", t.id) for t in ours_out]
    else:
        deletes += [Step("delete", "outbound", t.id) for t in ours_out[1:]]
        out = ours_out[0] if ours_out else None
        if out is None:
            steps.append(Step("create", "outbound", outbound=want.outbound))
        elif not _same(out, want.outbound):
            steps.append(Step("update", "outbound", out.id, outbound=want.outbound))
        else:
            kept["outbound"] = out.id
    return Plan(tuple(steps + deletes), kept=kept)


def _conflict(kind: str, id_: str, name: str, numbers: Sequence[str], adopt: bool) -> str:
    what = _label(kind, id_, name)
    nums = ", ".join(numbers)
    if adopt:
        return f"{what} also routes {nums}, and only one can be adopted: remove it"
    return (
        f"{what} already routes {nums}: remove it, or set spec.telephony.adopt: true "
        "to take it over"
    )
