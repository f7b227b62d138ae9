"""Outbound calls: an agent dials a phone number into its room through its VoiceAgent's
outbound trunk (spec.telephony.outbound), which the operator keeps on LiveKit under the
name voicefleet_contract.telephony gives it. `Job.dial` is the entrypoint's way in.

Needs LiveKit's SIP bridge (livekit/sip) to carry the call; without one, LiveKit answers
CreateSIPParticipant with `unavailable: no response from servers`, raised as it is.
"""

from __future__ import annotations

from livekit import api
from livekit.protocol import sip

from voicefleet_contract.telephony import sip_object_name


class NoOutboundTrunk(LookupError):
    """The VoiceAgent has no outbound trunk on LiveKit (spec.telephony.outbound unset, or
    the operator has not created it yet: status.telephony says)."""


async def outbound_trunk_id(client: api.LiveKitAPI, namespace: str, voice_agent: str) -> str:
    name = sip_object_name(namespace, voice_agent)
    listed = await client.sip.list_outbound_trunk(sip.ListSIPOutboundTrunkRequest())
    for trunk in listed.items:
        if trunk.name == name:
            return str(trunk.sip_trunk_id)
    raise NoOutboundTrunk(f"no outbound trunk {name!r} on LiveKit: see spec.telephony.outbound")


async def dial(
    client: api.LiveKitAPI,
    namespace: str,
    voice_agent: str,
    room: str,
    number: str,
    *,
    identity: str = "",
    wait_until_answered: bool = False,
) -> sip.SIPParticipantInfo:
    """Call `number` into `room` (the callee joins as a SIP participant)."""
    trunk = await outbound_trunk_id(client, namespace, voice_agent)
    req = sip.CreateSIPParticipantRequest(
        sip_trunk_id=trunk,
        sip_call_to=number,
        room_name=room,
        participant_identity=identity or f"sip-{number.lstrip('+')}",
        wait_until_answered=wait_until_answered,
    )
    return await client.sip.create_sip_participant(req)
