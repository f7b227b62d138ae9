"""How voicefleet names the LiveKit SIP objects it keeps for a VoiceAgent (spec.telephony).

The operator creates the trunks and the dispatch rule under these names; a worker finds
its VoiceAgent's outbound trunk by the same name to place calls (`Job.dial`).
"""

from typing import Final

# In each object's metadata (JSON): which VoiceAgent owns it, "<namespace>/<name>".
OWNER_KEY: Final = "voicefleet.dev/voiceagent"


def owner_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def sip_object_name(namespace: str, name: str) -> str:
    """The name of a VoiceAgent's trunks and dispatch rule on LiveKit (`lk sip ... list`)."""
    return f"voicefleet/{owner_key(namespace, name)}"
