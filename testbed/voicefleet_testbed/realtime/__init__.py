"""The testbed's OpenAI Realtime API stand-in: the one test double in voicefleet.

There is no internet here, so the worker's `livekit-plugins-openai` client talks to this
aiohttp WebSocket server on loopback instead of api.openai.com. It speaks the subset of
the GA Realtime protocol that the installed plugin (1.8.9) uses, with the same event
names and fields, and behaves like a model in the ways that matter to voicefleet:

- server VAD on the energy of the incoming PCM16 24 kHz audio: `speech_started` when it
  rises, `speech_stopped` after the session's `silence_duration_ms` (default 500) of quiet;
- after speech stops (when `create_response` is on) or on `response.create`: a model
  delay (default 200 ms), then a tone streamed as audio deltas with a transcript;
- interruption: speech during a response (or `response.cancel`) ends it with
  `response.done` status `cancelled`;
- function calls on demand (`nextToolCall`), answered after the client sends the
  `function_call_output` and `response.create`, with the output in the transcript;
- faults on demand: drop the socket now or after N ms, send an `error`, fail the next
  response, refuse the next N handshakes;
- scenarios: every test can use its own settings and counters through its URL.

Use it in-process (`async with RealtimeStandIn() as s: s.base_url("my-test")`), as a
process (`python -m voicefleet_testbed.realtime --port 0` prints the URL; the testbed
stack runs one and exports `OPENAI_BASE_URL`), and control it over HTTP with
`StandInClient`. Routes: see `server.py`; settings: see `settings.py`.
"""

from .client import StandInClient
from .server import RealtimeStandIn
from .settings import Settings, ToolCall

__all__ = ["RealtimeStandIn", "Settings", "StandInClient", "ToolCall"]
