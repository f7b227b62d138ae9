"""A caller in a real browser: Debian's Chromium, headless, driven by Playwright, talking
to the call page with a fake microphone that plays a spoken sentence (espeak-ng).

    with BrowserCaller(artifacts_dir) as b:
        seen = b.call(page_url, "default/support", timeout=90)

Chromium is started as the machine allows: no sandbox (root), no GPU, and none of its
background traffic (component updates, sync, safe browsing...), which would try outside
addresses. Its fake capture device loops the speech file: the sentence, then silence long
enough for the agent's VAD to end the turn, again and again.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

CHROMIUM: Final = Path("/usr/bin/chromium")
SENTENCE: Final = "Hello! I would like to know where my order is."
TRAILING_SILENCE_S: Final = 2.0  # past the example's 500 ms VAD silence, with margin
CHROMIUM_FLAGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
    "--use-fake-device-for-media-stream",
)


class BrowserMissing(RuntimeError):
    pass


def speech_wav(path: Path, text: str = SENTENCE, silence_s: float = TRAILING_SILENCE_S) -> Path:
    """`text` spoken by espeak-ng, then `silence_s` of silence, as a 16-bit mono WAV."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise BrowserMissing("espeak-ng is missing: make binaries (Debian's espeak-ng)")
    spoken = path.with_suffix(".speech.wav")
    subprocess.run([espeak, "-w", str(spoken), text], check=True, capture_output=True)
    with wave.open(str(spoken), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    pad = b"\0" * int(params.framerate * silence_s) * params.sampwidth * params.nchannels
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(frames + pad)
    spoken.unlink()
    return path


@dataclass
class PageCall:
    """What the page showed during one call."""

    states: list[str] = field(default_factory=list)  # the agent's states, in order, deduplicated
    agent_transcript: list[str] = field(default_factory=list)
    user_transcript: list[str] = field(default_factory=list)
    audio_max: float = 0.0  # the loudest agent audio the page's analyser measured (RMS)
    error: str = ""
    room: str = ""
    console_errors: list[str] = field(default_factory=list)


class BrowserCaller:
    """One headless Chromium with a fake microphone; `call` drives the call page."""

    def __init__(self, work_dir: Path) -> None:
        if not CHROMIUM.is_file():
            raise BrowserMissing(f"{CHROMIUM} is missing: make binaries (Debian's chromium)")
        self.dir = work_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wav = speech_wav(self.dir / "speech.wav")
        self._pw: Playwright | None = None
        self._browser: Browser | None = None

    def __enter__(self) -> BrowserCaller:
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={self.wav}"],
        )
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._pw is not None:
            self._pw.stop()

    def call(
        self,
        url: str,
        agent: str,
        *,
        timeout: float = 90.0,
        agent_turns: int = 1,
        screenshot: Path | None = None,
    ) -> PageCall:
        """Open the page for `agent` (namespace/name), press Call, and watch until the agent
        has answered `agent_turns` times (transcript segments and audio), or `timeout`.
        Hangs up before returning; `screenshot` is taken while the call is on."""
        assert self._browser is not None, "use BrowserCaller as a context manager"
        seen = PageCall()
        page = self._browser.new_page(viewport={"width": 760, "height": 820})

        def console(m: ConsoleMessage) -> None:
            if m.type == "error":
                seen.console_errors.append(m.text)

        page.on("console", console)
        try:
            page.goto(f"{url}?agent={agent}", wait_until="load")
            page.wait_for_selector(
                f"#agent option[value='{agent}']", state="attached", timeout=15_000
            )
            page.select_option("#agent", agent)
            page.click("#call")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self._read(page, seen)
                if seen.error or (
                    len(seen.agent_transcript) >= agent_turns and seen.audio_max > 0.01
                ):
                    break
                page.wait_for_timeout(200)  # the page's own clock: poll its DOM
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
            if page.is_visible("#hangup"):  # not after an error that ended the call
                page.click("#hangup")
                page.wait_for_selector("#state[data-state='idle']", timeout=10_000)
            self._read(page, seen)
        finally:
            page.close()
        return seen

    @staticmethod
    def _read(page: Page, seen: PageCall) -> None:
        doc: dict[str, Any] = page.evaluate(
            """() => ({
                state: document.querySelector('#state')?.dataset.state ?? '',
                agent: [...document.querySelectorAll('#transcript li[data-speaker=agent]')]
                    .map(li => li.textContent.trim()).filter(Boolean),
                user: [...document.querySelectorAll('#transcript li[data-speaker=user]')]
                    .map(li => li.textContent.trim()).filter(Boolean),
                audioMax: parseFloat(document.querySelector('#audio-level')?.dataset.max ?? '0'),
                error: document.querySelector('#error')?.textContent.trim() ?? '',
                room: document.querySelector('#room')?.textContent.trim() ?? '',
            })"""
        )
        if doc["state"] and (not seen.states or seen.states[-1] != doc["state"]):
            seen.states.append(doc["state"])
        seen.agent_transcript = list(doc["agent"]) or seen.agent_transcript
        seen.user_transcript = list(doc["user"]) or seen.user_transcript
        seen.audio_max = max(seen.audio_max, float(doc["audioMax"] or 0))
        seen.error = str(doc["error"])
        seen.room = str(doc["room"]) or seen.room


def main(argv: list[str] | None = None) -> int:
    """python -m voicefleet_testbed.browser URL NAMESPACE/NAME [--screenshot F]: one call
    from headless Chromium to the call page; prints what the page showed."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m voicefleet_testbed.browser")
    ap.add_argument("url", help="the call page, e.g. what `make demo` prints")
    ap.add_argument("agent", help="namespace/name of the VoiceAgent")
    ap.add_argument("--screenshot", type=Path, help="a PNG of the page during the call")
    ap.add_argument("--turns", type=int, default=2, help="agent answers to wait for")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d, BrowserCaller(Path(d)) as b:
        seen = b.call(args.url, args.agent, agent_turns=args.turns, screenshot=args.screenshot)
    print(f"room {seen.room}: agent states {' -> '.join(seen.states)}")
    print(
        f"agent said {len(seen.agent_transcript)} time(s); loudest agent audio {seen.audio_max:.3f} RMS"
    )
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    if seen.error:
        print(f"error on the page: {seen.error}")
    return 0 if seen.agent_transcript and seen.audio_max > 0.01 and not seen.error else 1


if __name__ == "__main__":
    raise SystemExit(main())
