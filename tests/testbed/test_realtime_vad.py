"""The stand-in's energy VAD on synthetic audio (pure, no sockets)."""

from __future__ import annotations

import numpy as np

from voicefleet_testbed.audio import Tone, Voice, level_dbfs, silence
from voicefleet_testbed.realtime.vad import EnergyVad, VadEvent

RATE = 24000


def pcm(*parts: np.ndarray) -> bytes:
    return np.concatenate(parts).tobytes()


def test_a_turn_starts_and_stops() -> None:
    vad = EnergyVad(RATE, threshold_db=-40, min_speech_ms=60, silence_ms=300)
    events = vad.push(pcm(silence(RATE, 200), Voice(RATE).next(RATE), silence(RATE, 400)))
    assert events == [VadEvent("start", 200), VadEvent("stop", 1200)]
    assert not vad.in_speech


def test_not_over_until_the_silence_is_long_enough() -> None:
    vad = EnergyVad(RATE, silence_ms=500)
    assert vad.push(pcm(Voice(RATE).next(RATE // 2), silence(RATE, 400))) == [VadEvent("start", 0)]
    assert vad.push(pcm(silence(RATE, 100))) == [VadEvent("stop", 500)]


def test_a_click_is_not_speech_and_chunking_does_not_matter() -> None:
    vad = EnergyVad(RATE, min_speech_ms=60)
    assert vad.push(pcm(silence(RATE, 100), Tone(RATE).next(RATE // 100 * 3))) == []
    whole = EnergyVad(RATE).push(pcm(Voice(RATE).next(RATE), silence(RATE, 600)))
    chunked = EnergyVad(RATE)
    data = pcm(Voice(RATE).next(RATE), silence(RATE, 600))
    events = [e for i in range(0, len(data), 777) for e in chunked.push(data[i : i + 777])]
    assert events == whole


def test_levels() -> None:
    assert level_dbfs(silence(RATE, 10)) == -120.0
    assert -25 < level_dbfs(Voice(RATE).next(RATE)) < -10
    assert -14 < level_dbfs(Tone(RATE, amplitude=0.3).next(RATE)) < -12
