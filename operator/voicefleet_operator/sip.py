"""LiveKit's SIP service through livekit-api: list trunks and rules as `telephony` data,
and carry out a `telephony.Plan`. A thin adapter: every decision is in telephony.py."""

from __future__ import annotations

from typing import Any, Final, Protocol

import aiohttp
from livekit import api as lkapi
from livekit.protocol import sip as lksip
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from . import telephony as tel

TRANSPORTS: Final = {
    "auto": lksip.SIP_TRANSPORT_AUTO,
    "udp": lksip.SIP_TRANSPORT_UDP,
    "tcp": lksip.SIP_TRANSPORT_TCP,
    "tls": lksip.SIP_TRANSPORT_TLS,
}
TRANSPORT_NAMES: Final = {v: k for k, v in TRANSPORTS.items()}


class SipApi(Protocol):
    async def list(self) -> tel.Live: ...

    async def apply(self, plan: tel.Plan) -> dict[tel.Kind, str]: ...

    async def close(self) -> None: ...


# --- protobuf <-> telephony data ---------------------------------------------------------


def inbound_of(t: lksip.SIPInboundTrunkInfo) -> tel.InboundTrunk:
    return tel.InboundTrunk(
        t.sip_trunk_id, t.name, t.metadata, tuple(t.numbers), tuple(t.allowed_addresses),
        tuple(t.allowed_numbers), t.auth_username, t.auth_password,
    )  # fmt: skip


def outbound_of(t: lksip.SIPOutboundTrunkInfo) -> tel.OutboundTrunk:
    return tel.OutboundTrunk(
        t.sip_trunk_id, t.name, t.metadata, t.address, tuple(t.numbers),
        TRANSPORT_NAMES.get(t.transport, "auto"), t.auth_username, t.auth_password,
    )  # fmt: skip


def rule_of(r: lksip.SIPDispatchRuleInfo) -> tel.DispatchRule:
    which = r.rule.WhichOneof("rule")
    if which == "dispatch_rule_direct":
        kind, room, pin = (
            "direct",
            r.rule.dispatch_rule_direct.room_name,
            r.rule.dispatch_rule_direct.pin,
        )
    elif which == "dispatch_rule_individual":
        ind = r.rule.dispatch_rule_individual
        kind, room, pin = "individual", ind.room_prefix, ind.pin
    else:  # callee rules and the like: never ours, listed for conflicts only
        kind, room, pin = which or "", "", ""
    agents = list(r.room_config.agents)
    return tel.DispatchRule(
        r.sip_dispatch_rule_id, r.name, r.metadata, tuple(r.trunk_ids), kind, room, pin,
        agents[0].agent_name if agents else "", agents[0].metadata if agents else "",
        tuple(sorted(r.attributes.items())), tuple(r.inbound_numbers),
    )  # fmt: skip


def inbound_proto(t: tel.InboundTrunk) -> lksip.SIPInboundTrunkInfo:
    return lksip.SIPInboundTrunkInfo(
        name=t.name, metadata=t.metadata, numbers=list(t.numbers),
        allowed_addresses=list(t.allowed_addresses), allowed_numbers=list(t.allowed_numbers),
        auth_username=t.auth_username, auth_password=t.auth_password,
    )  # fmt: skip


def outbound_proto(t: tel.OutboundTrunk) -> lksip.SIPOutboundTrunkInfo:
    return lksip.SIPOutboundTrunkInfo(
        name=t.name, metadata=t.metadata, address=t.address, numbers=list(t.numbers),
        transport=TRANSPORTS[t.transport], auth_username=t.auth_username,
        auth_password=t.auth_password,
    )  # fmt: skip


def rule_proto(r: tel.DispatchRule) -> tuple[lksip.SIPDispatchRule, RoomConfiguration]:
    if r.kind == "direct":
        rule = lksip.SIPDispatchRule(
            dispatch_rule_direct=lksip.SIPDispatchRuleDirect(room_name=r.room, pin=r.pin)
        )
    else:
        rule = lksip.SIPDispatchRule(
            dispatch_rule_individual=lksip.SIPDispatchRuleIndividual(room_prefix=r.room, pin=r.pin)
        )
    config = RoomConfiguration(
        agents=[RoomAgentDispatch(agent_name=r.agent_name, metadata=r.job_metadata)]
    )
    return rule, config


def rule_info(r: tel.DispatchRule, trunk_id: str) -> lksip.SIPDispatchRuleInfo:
    rule, config = rule_proto(r)
    return lksip.SIPDispatchRuleInfo(
        rule=rule, trunk_ids=[trunk_id] if trunk_id else [], name=r.name,
        metadata=r.metadata, attributes=dict(r.attributes), room_config=config,
    )  # fmt: skip


class LiveKitSip:
    """A `SipApi` for one LiveKit deployment and key pair."""

    def __init__(self, url: str, api_key: str, api_secret: str, timeout: float = 10.0) -> None:
        self._args: tuple[Any, ...] = (url, api_key, api_secret)
        self._timeout = timeout
        self._api: lkapi.LiveKitAPI | None = None

    def _sip(self) -> Any:
        if self._api is None:  # its aiohttp session needs the running loop
            url, key, secret = self._args
            self._api = lkapi.LiveKitAPI(
                url, key, secret, timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        return self._api.sip

    async def list(self) -> tel.Live:
        sip = self._sip()
        inbound = await sip.list_inbound_trunk(lksip.ListSIPInboundTrunkRequest())
        outbound = await sip.list_outbound_trunk(lksip.ListSIPOutboundTrunkRequest())
        rules = await sip.list_dispatch_rule(lksip.ListSIPDispatchRuleRequest())
        return tel.Live(
            tuple(inbound_of(t) for t in inbound.items),
            tuple(outbound_of(t) for t in outbound.items),
            tuple(rule_of(r) for r in rules.items),
        )

    async def apply(self, plan: tel.Plan) -> dict[tel.Kind, str]:
        """The plan's steps in order; the ids of what stands afterwards."""
        sip = self._sip()
        ids: dict[tel.Kind, str] = dict(plan.kept)
        for step in plan.steps:
            if step.op == "delete":
                if step.kind == "rule":
                    await sip.delete_dispatch_rule(
                        lksip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=step.id)
                    )
                else:
                    await sip.delete_trunk(lksip.DeleteSIPTrunkRequest(sip_trunk_id=step.id))
                continue
            if step.inbound is not None:
                if step.op == "create":
                    got = await sip.create_inbound_trunk(
                        lksip.CreateSIPInboundTrunkRequest(trunk=inbound_proto(step.inbound))
                    )
                else:
                    got = await sip.update_inbound_trunk(step.id, inbound_proto(step.inbound))
                ids["inbound"] = got.sip_trunk_id
            elif step.outbound is not None:
                if step.op == "create":
                    got = await sip.create_outbound_trunk(
                        lksip.CreateSIPOutboundTrunkRequest(trunk=outbound_proto(step.outbound))
                    )
                else:
                    got = await sip.update_outbound_trunk(step.id, outbound_proto(step.outbound))
                ids["outbound"] = got.sip_trunk_id
            elif step.rule is not None:
                # The rule takes this trunk's calls: the one just created, or kept.
                trunk = ids.get("inbound", "")
                if step.op == "create":
                    info = rule_info(step.rule, trunk)
                    got = await sip.create_dispatch_rule(
                        lksip.CreateSIPDispatchRuleRequest(dispatch_rule=info)
                    )
                else:
                    got = await sip.update_dispatch_rule(step.id, rule_info(step.rule, trunk))
                ids["rule"] = got.sip_dispatch_rule_id
        return ids

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None
