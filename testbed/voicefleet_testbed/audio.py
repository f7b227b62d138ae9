"""Synthetic audio for the testbed: a speech-like voice, a tone, and an energy meter.

Everything here is PCM16 mono as numpy int16 arrays. The Realtime API stand-in answers
with `Tone`; the simulated caller speaks with `Voice` and hears the agent through
`level_dbfs`. Both generators are phase-continuous across chunks, so a stream of chunks
sounds like one signal (no clicks that an energy detector could mistake for speech).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]
SILENCE_DBFS = -120.0


def level_dbfs(samples: Pcm | bytes | memoryview) -> float:
    """RMS level of PCM16 samples in dB relative to full scale (-120 for silence)."""
    if not isinstance(samples, np.ndarray):
        samples = np.frombuffer(samples, dtype=np.int16)
    if samples.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    if rms < 1e-9:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))


def silence(sample_rate: int, ms: float) -> Pcm:
    return np.zeros(int(sample_rate * ms / 1000), dtype=np.int16)


class Tone:
    """A sine tone, e.g. the stand-in's "model voice"."""

    def __init__(self, sample_rate: int, hz: float = 440.0, amplitude: float = 0.3) -> None:
        self.sample_rate = sample_rate
        self.hz = hz
        self.amplitude = amplitude
        self._phase = 0.0

    def next(self, n: int) -> Pcm:
        step = 2 * math.pi * self.hz / self.sample_rate
        phases = self._phase + step * np.arange(n)
        self._phase = float((self._phase + step * n) % (2 * math.pi))
        out: Pcm = (np.sin(phases) * self.amplitude * 32767).astype(np.int16)
        return out


class Voice:
    """A voiced, speech-like signal: a fundamental with decaying harmonics, a slow pitch
    wobble, and amplitude modulated at a syllable rate (about 4 Hz) that never falls to
    silence, so an energy VAD sees one continuous utterance."""

    def __init__(
        self,
        sample_rate: int,
        f0: float = 140.0,
        amplitude: float = 0.25,
        syllable_hz: float = 4.0,
        harmonics: int = 6,
    ) -> None:
        self.sample_rate = sample_rate
        self.f0 = f0
        self.amplitude = amplitude
        self.syllable_hz = syllable_hz
        self.harmonics = harmonics
        self._t = 0  # samples generated so far
        self._phase = 0.0

    def next(self, n: int) -> Pcm:
        t = (self._t + np.arange(n)) / self.sample_rate
        self._t += n
        f = self.f0 * (1.0 + 0.05 * np.sin(2 * math.pi * 0.7 * t))  # pitch wobble
        phase = self._phase + np.cumsum(2 * math.pi * f / self.sample_rate)
        self._phase = float(phase[-1] % (2 * math.pi)) if n else self._phase
        wave = np.zeros(n)
        for k in range(1, self.harmonics + 1):
            wave += np.sin(k * phase) / k
        wave /= sum(1 / k for k in range(1, self.harmonics + 1))
        envelope = 0.55 + 0.45 * np.sin(2 * math.pi * self.syllable_hz * t) ** 2
        return (wave * envelope * self.amplitude * 32767).astype(np.int16)
