"""A paced microphone: publishes 10 ms frames in real time into an `rtc.AudioSource`.

Silence flows all the time (as from a real, open microphone); `play` swaps in a signal for
a while and resolves, once the last of it is queued, to the loop time at which it will
have played out. `stop` cuts the current signal short (barge-in, or an agent that is
interrupted) and drops what the source still had queued.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import numpy as np
from livekit import rtc

from ..audio import Pcm

FRAME_MS = 10


class AudioPump:
    def __init__(self, source: rtc.AudioSource) -> None:
        self.source = source
        self.rate = source.sample_rate
        self._n = self.rate * FRAME_MS // 1000
        self._signal: Callable[[int], Pcm] | None = None
        self._left = 0  # samples of the current signal still to send
        self._done: asyncio.Future[float] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def playing(self) -> bool:
        return self._signal is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audio-pump")

    async def aclose(self) -> None:
        self.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def play(self, signal: Callable[[int], Pcm], seconds: float) -> asyncio.Future[float]:
        """Send `signal` for `seconds`; the future resolves to its play-out end (loop time)."""
        self.stop()
        self._signal = signal
        self._left = int(self.rate * seconds)
        self._done = asyncio.get_running_loop().create_future()
        return self._done

    def stop(self) -> bool:
        """Cut the current signal; True if one was playing."""
        was = self._signal is not None
        self._signal, self._left = None, 0
        if self._done is not None and not self._done.done():
            self._done.set_result(asyncio.get_running_loop().time())
        self._done = None
        if was:
            self.source.clear_queue()
        return was

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if self._signal is not None:
                n = min(self._n, self._left)
                pcm = self._signal(n)
                if n < self._n:
                    pcm = np.concatenate([pcm, np.zeros(self._n - n, dtype=np.int16)])
                self._left -= n
            else:
                pcm = np.zeros(self._n, dtype=np.int16)
            await self.source.capture_frame(rtc.AudioFrame(pcm.tobytes(), self.rate, 1, self._n))
            if self._signal is not None and self._left <= 0:
                end = loop.time() + self.source.queued_duration
                if self._done is not None and not self._done.done():
                    self._done.set_result(end)
                self._signal, self._done = None, None
            due += FRAME_MS / 1000
            delay = due - loop.time()
            if delay < -0.2:  # the loop stalled: start afresh rather than burst
                due = loop.time()
            elif delay > 0:
                await asyncio.sleep(delay)  # real-time pacing of the microphone
