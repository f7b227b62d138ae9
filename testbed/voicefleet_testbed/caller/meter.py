"""When the agent talks: an energy meter over the agent's audio, with awaitable changes.

`feed` takes each received frame (from an `rtc.AudioStream`), `tick` is called a few times
a second so silence is noticed even when no frames arrive. Onsets are loop times of the
first loud frame after `quiet_ms` of quiet; offsets are loop times of the last loud frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ..audio import level_dbfs


class Changes:
    """Something changed: wake everyone waiting, then re-arm."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def bump(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, check: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            left = deadline - loop.time()
            if left <= 0:
                return False
            event = self._event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)
        return True


class Meter:
    def __init__(self, changes: Changes, threshold_db: float = -45.0, quiet_ms: float = 250.0):
        self.changes = changes
        self.threshold_db = threshold_db
        self.quiet_s = quiet_ms / 1000
        self.talking = False
        self.onsets: list[float] = []
        self.offsets: list[float] = []
        self.last_loud = 0.0
        self.loud_s = 0.0  # total time heard above the threshold
        self.frames = 0  # every frame received, loud or not
        self.last_frame_at: float | None = None

    def feed(self, pcm: bytes | memoryview, duration_s: float, now: float) -> None:
        self.frames += 1
        self.last_frame_at = now
        if level_dbfs(pcm) > self.threshold_db:
            self.loud_s += duration_s
            self.last_loud = now
            if not self.talking:
                self.talking = True
                self.onsets.append(now)
                self.changes.bump()
        else:
            self.tick(now)

    def tick(self, now: float) -> None:
        if self.talking and now - self.last_loud >= self.quiet_s:
            self.talking = False
            self.offsets.append(self.last_loud)
            self.changes.bump()

    def onset_after(self, t: float) -> float | None:
        return next((o for o in self.onsets if o >= t), None)

    def offset_after(self, t: float) -> float | None:
        return next((o for o in self.offsets if o >= t), None)
