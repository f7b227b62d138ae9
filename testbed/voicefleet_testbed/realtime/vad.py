"""An energy voice-activity detector over PCM16, driven by audio time (not wall time).

Like the real server VAD it only advances as audio arrives: speech starts once the level
stays above the threshold for `min_speech_ms`, and stops after `silence_ms` of audio
below it. Times are milliseconds of audio since the buffer began (`audio_start_ms`,
`audio_end_ms` in the Realtime events).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..audio import level_dbfs

WINDOW_MS = 10


@dataclass(frozen=True)
class VadEvent:
    kind: str  # "start" | "stop"
    audio_ms: int


class EnergyVad:
    def __init__(
        self,
        sample_rate: int = 24000,
        threshold_db: float = -40.0,
        min_speech_ms: float = 60.0,
        silence_ms: float = 500.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.threshold_db = threshold_db
        self.min_speech_ms = min_speech_ms
        self.silence_ms = silence_ms
        self._window = sample_rate * WINDOW_MS // 1000 * 2  # bytes per window
        self.reset()

    def reset(self) -> None:
        self._rest = b""
        self.audio_ms = 0  # audio seen so far
        self.in_speech = False
        self._loud_since: int | None = None
        self._quiet_since: int | None = None

    def push(self, pcm: bytes) -> list[VadEvent]:
        data = self._rest + pcm
        events: list[VadEvent] = []
        n = len(data) // self._window
        for i in range(n):
            loud = level_dbfs(data[i * self._window : (i + 1) * self._window]) > self.threshold_db
            now = self.audio_ms
            self.audio_ms += WINDOW_MS
            if not self.in_speech:
                if not loud:
                    self._loud_since = None
                    continue
                if self._loud_since is None:
                    self._loud_since = now
                if self.audio_ms - self._loud_since >= self.min_speech_ms:
                    self.in_speech = True
                    self._quiet_since = None
                    events.append(VadEvent("start", self._loud_since))
            elif loud:
                self._quiet_since = None
            else:
                if self._quiet_since is None:
                    self._quiet_since = now
                if self.audio_ms - self._quiet_since >= self.silence_ms:
                    self.in_speech = False
                    self._loud_since = None
                    events.append(VadEvent("stop", self._quiet_since))
        self._rest = data[n * self._window :]
        return events
