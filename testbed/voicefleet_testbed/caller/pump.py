"""A microphone for simulated participants: audio paced by the native source, not the loop.

Silence flows all the time (as from a real, open microphone); `play` swaps in a signal for
a while and resolves, once the last of it is queued, to the loop time at which it will
have played out. `stop` cuts the current signal short (barge-in, or an agent that is
interrupted) and drops what the source still had queued.

Why a lead: livekit's native `AudioSource` sends 10 ms from its queue every 10 ms on its own
thread and sends nothing while the queue is empty. A mic pushed 10 ms at a time from the
event loop goes silent on the wire whenever the loop stalls (a starved test process with
ten callers), and the far side's VAD then hears the caller stop mid-sentence: the turn
splits, the agent answers before the caller is done. Keeping `LEAD_S` queued makes a
stall shorter than that invisible to the far side, and costs a few pushes a second instead
of a hundred. A new signal clears the queued silence first, so it starts at once, and its
first push queues a whole lead of it (all of a short utterance).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import numpy as np
from livekit import rtc

from ..audio import Pcm

FRAME_MS = 10  # the native source sends whole 10 ms frames
LEAD_S = 1.0  # audio kept queued ahead of the wire
QUEUE_MS = 2000  # the native queue; a push that leaves at most this queued completes at once
TICK_S = 0.05  # top-up interval when nothing else wakes the pump


def microphone(rate: int) -> rtc.AudioSource:
    """A mono source whose queue holds the pump's lead."""
    return rtc.AudioSource(rate, 1, queue_size_ms=QUEUE_MS)


class AudioPump:
    def __init__(self, source: rtc.AudioSource) -> None:
        self.source = source
        self.rate = source.sample_rate
        self._frame = self.rate * FRAME_MS // 1000
        self._signal: Callable[[int], Pcm] | None = None
        self._left = 0  # samples of the current signal still to queue
        self._done: asyncio.Future[float] | None = None
        self._restart = False  # drop what the source holds before the next push
        self._queued_until = 0.0  # loop time at which the source's queue runs dry
        self._wake = asyncio.Event()
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
        self._cut()
        self._signal = signal
        self._left = int(self.rate * seconds)
        self._done = asyncio.get_running_loop().create_future()
        self._restart = True
        self._wake.set()
        return self._done

    def stop(self) -> bool:
        """Cut the current signal; True if one was playing."""
        was = self._cut()
        if was:
            self._restart = True
            self._wake.set()
        return was

    def _cut(self) -> bool:
        was = self._signal is not None
        self._signal, self._left = None, 0
        if self._done is not None and not self._done.done():
            self._done.set_result(asyncio.get_running_loop().time())
        self._done = None
        return was

    def _next(self, want: int) -> tuple[np.ndarray, asyncio.Future[float] | None]:
        """Up to `want` samples (whole frames) of the signal, or silence; plus the signal's
        future when these samples are its last."""
        frames = max(1, -(-want // self._frame))
        if self._signal is None:
            return np.zeros(frames * self._frame, dtype=np.int16), None
        n = min(frames * self._frame, self._left)
        pcm = self._signal(n)
        self._left -= n
        pad = -n % self._frame
        if pad:
            pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
        if self._left > 0:
            return pcm, None
        done = self._done
        self._signal, self._done = None, None
        return pcm, done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._restart:
                self._restart = False
                self.source.clear_queue()
                self._queued_until = loop.time()
            # (a queue that ran dry during a stall is empty: the lead starts again from now)
            while (
                not self._restart and (lead := max(0.0, self._queued_until - loop.time())) < LEAD_S
            ):
                pcm, done = self._next(int(self.rate * (LEAD_S - lead)))
                now = loop.time()
                self._queued_until = max(self._queued_until, now) + len(pcm) / self.rate
                end = self._queued_until
                frame = rtc.AudioFrame(pcm.tobytes(), self.rate, 1, len(pcm))
                await self.source.capture_frame(frame)
                if done is not None and not done.done():
                    done.set_result(end)
            self._wake.clear()
            if not self._restart:  # a play/stop during the last push is handled at once
                # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel that
                # arrives as the event is set (stop() then aclose()), and the pump never ends
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):
                        await self._wake.wait()
