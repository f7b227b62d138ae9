"""Simulated callers: real WebRTC participants that talk to a voice agent and measure it.

A `Caller` joins a LiveKit room (its token can dispatch the agent by name, or it creates
an explicit dispatch), publishes a speech-like voice for a turn and then silence, paced
in real time, and meters the agent's audio by energy. Per turn it reports the latency
from the end of its speech to the first agent audio it hears, how long the answer
lasted, and, when it talks over the agent, how fast the agent fell silent. Per call it
reports when the agent joined, agents leaving and joining (failover gaps), and whether
the call was dropped. `run_callers` runs many calls and summarises them; the CLI is
`python -m voicefleet_testbed.caller --agent NAME --callers N --turns K`.
"""

from .core import Caller
from .fleet import one_call, run_callers
from .report import CallReport, Summary, TurnResult

__all__ = ["CallReport", "Caller", "Summary", "TurnResult", "one_call", "run_callers"]
