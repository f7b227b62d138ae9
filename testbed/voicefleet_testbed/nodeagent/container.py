"""One container as a local process: start, probe, restart with backoff, stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from ..procs import start_time
from .podspec import Probe, ProcessPlan, restart_backoff, should_restart
from .probes import ProbeTicker, run_probe
from .status import ContainerView


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class InProcess(Protocol):
    """A container served inside the node agent (see inprocess.py), not a process."""

    pid: int
    returncode: int | None

    async def start(self) -> None: ...
    async def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...


InProcessFactory = Callable[[Mapping[str, str]], InProcess]


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0  # the kubelet uses 10 s; the testbed restarts faster
    cap: float = 30.0  # the kubelet caps at 300 s
    reset_after: float = 60.0  # a run this long forgets earlier crashes


@dataclass(frozen=True)
class Probes:
    startup: Probe | None
    readiness: Probe | None
    liveness: Probe | None


class ContainerRunner:
    def __init__(
        self,
        view: ContainerView,
        plan: ProcessPlan,
        probes: Probes,
        log_path: Path,
        pid_path: Path,
        restart_policy: str,
        backoff: Backoff,
        http: aiohttp.ClientSession,
        on_change: Callable[[], None],
        kill_grace: float = 30.0,
        inprocess: InProcessFactory | None = None,
    ) -> None:
        self.kill_grace = kill_grace
        self.inprocess = inprocess
        self.view = view
        self.plan = plan
        self.probes = probes
        self.log_path = log_path
        self.pid_path = pid_path
        self.restart_policy = restart_policy
        self.backoff = backoff
        self.http = http
        self.on_change = on_change
        self.proc: asyncio.subprocess.Process | InProcess | None = None
        self.stopping = False
        self._stop_event = asyncio.Event()
        self._liveness_failed = False
        self._exited = asyncio.Event()

    # --- process -----------------------------------------------------------------------
    async def _start(self) -> asyncio.subprocess.Process | InProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {now_iso()} start (restart {self.view.restart_count})\n".encode())
            log.flush()
            if self.inprocess is not None:
                log.write(b"served in-process by the node agent (image table: inprocess)\n")
                served = self.inprocess(self.plan.env)
                await served.start()
                return served
            proc = await asyncio.create_subprocess_exec(
                *self.plan.argv,
                env=self.plan.env,
                cwd=self.plan.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own group: stopping it stops its children
            )
        self.pid_path.write_text(f"{proc.pid} {start_time(proc.pid) or 0}\n")
        return proc

    def _signal(self, sig: signal.Signals, group: bool) -> None:
        if self.proc is None:
            return
        if not isinstance(self.proc, asyncio.subprocess.Process):
            self.proc.send_signal(sig)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)

    async def run_once(self) -> int:
        """Run to completion once (init containers); returns the exit code."""
        return await self._run_process()

    async def _run_process(self) -> int:
        try:
            self.proc = await self._start()
        except OSError as e:
            self.view.state, self.view.reason, self.view.message = "waiting", "StartError", str(e)
            self.on_change()
            return 128
        self._exited.clear()
        self._liveness_failed = False
        self.view.state, self.view.reason, self.view.message = "running", "", ""
        self.view.started_at = now_iso()
        self.view.container_id = f"testbed://{self.proc.pid or 'inprocess'}"
        self.view.started = self.probes.startup is None
        self.view.ready = False
        self.on_change()
        probe_task = asyncio.create_task(self._probe_loop())
        code = await self.proc.wait()
        self._exited.set()
        probe_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe_task
        # The container is gone: so is everything it started (as with a PID namespace).
        self._signal(signal.SIGKILL, group=True)
        exit_code = code if code >= 0 else 128 - code
        self.view.state = "terminated"
        self.view.exit_code = exit_code
        self.view.reason = "Completed" if exit_code == 0 else "Error"
        self.view.finished_at = now_iso()
        self.view.ready = False
        self.on_change()
        return exit_code

    async def run(self) -> None:
        """Run, restarting per restartPolicy with CrashLoopBackOff, until stopped."""
        failures = 0
        while not self.stopping:
            started = time.monotonic()
            code = await self._run_process()
            killed_by_probe = self._liveness_failed and self.restart_policy != "Never"
            if self.stopping or not (should_restart(self.restart_policy, code) or killed_by_probe):
                return
            if time.monotonic() - started > self.backoff.reset_after:
                failures = 0
            failures += 1
            delay = restart_backoff(failures, self.backoff.base, self.backoff.cap)
            self.view.last_state = {"terminated": self.view.to_status()["state"]["terminated"]}
            self.view.restart_count += 1
            self.view.state, self.view.reason = "waiting", "CrashLoopBackOff"
            self.view.message = (
                f"back-off {delay:.0f}s restarting failed container={self.view.name}"
            )
            self.on_change()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)

    async def stop(
        self, grace: float, pre_stop: Callable[[], asyncio.Future[None]] | None = None
    ) -> None:
        """preStop, SIGTERM to the container's main process, SIGKILL after `grace` seconds."""
        self.stopping = True
        self._stop_event.set()
        if self.proc is None or self.proc.returncode is not None:
            return
        deadline = time.monotonic() + grace
        if pre_stop is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pre_stop(), max(0.0, deadline - time.monotonic()))
        # The kubelet signals the container's PID 1 only; children are its business.
        self._signal(signal.SIGTERM, group=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), max(0.0, deadline - time.monotonic()))
        if self.proc.returncode is None:
            self._signal(signal.SIGKILL, group=True)
            await self._exited.wait()

    def kill_now(self) -> None:
        self.stopping = True
        self._stop_event.set()
        self._signal(signal.SIGKILL, group=True)

    # --- probes ------------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        if self.probes.startup is not None:
            ok = await self._until(self.probes.startup)
            if not ok:
                return self._fail_liveness("startup probe failed")
        self.view.started = True
        self.on_change()
        tasks = []
        if self.probes.readiness is not None:
            tasks.append(asyncio.create_task(self._readiness(self.probes.readiness)))
        else:
            self.view.ready = True
            self.on_change()
        if self.probes.liveness is not None:
            tasks.append(asyncio.create_task(self._liveness(self.probes.liveness)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _probe(self, probe: Probe) -> tuple[bool, str]:
        # A container served in-process answers its probes directly: the same answers as
        # over HTTP, without 1,200 loopback connections a second to and from this one
        # event loop at 2,000 workers (bench/autoscale.py).
        direct = getattr(self.proc, "probe", None)
        if direct is not None and probe.kind == "httpGet":
            return direct(probe.port, probe.http_path)  # type: ignore[no-any-return]
        return await run_probe(probe, self.plan.env, self.plan.cwd, self.http)

    async def _until(self, probe: Probe) -> bool:
        """Probe until `success_threshold` successes (True) or `failure_threshold` failures."""
        await asyncio.sleep(probe.initial_delay)
        ok_run = fail_run = 0
        ticker = ProbeTicker(probe.period)
        while True:
            ok, _ = await self._probe(probe)
            ok_run, fail_run = (ok_run + 1, 0) if ok else (0, fail_run + 1)
            if ok_run >= probe.success_threshold:
                return True
            if fail_run >= probe.failure_threshold:
                return False
            await ticker.tick()

    async def _readiness(self, probe: Probe) -> None:
        await asyncio.sleep(probe.initial_delay)
        ok_run = fail_run = 0
        ticker = ProbeTicker(probe.period)
        while True:
            ok, _ = await self._probe(probe)
            ok_run, fail_run = (ok_run + 1, 0) if ok else (0, fail_run + 1)
            ready = self.view.ready
            if ok_run >= probe.success_threshold:
                ready = True
            elif fail_run >= probe.failure_threshold:
                ready = False
            if ready != self.view.ready:
                self.view.ready = ready
                self.on_change()
            await ticker.tick()

    async def _liveness(self, probe: Probe) -> None:
        await asyncio.sleep(probe.initial_delay)
        fail_run = 0
        ticker = ProbeTicker(probe.period)
        while True:
            ok, detail = await self._probe(probe)
            fail_run = 0 if ok else fail_run + 1
            if fail_run >= probe.failure_threshold:
                return self._fail_liveness(f"liveness probe failed: {detail}")
            await ticker.tick()

    def _fail_liveness(self, why: str) -> None:
        # The kubelet kills the container and restarts it whatever the restartPolicy says.
        self._liveness_failed = True
        self.view.message = why
        self._signal(signal.SIGTERM, group=False)
        proc = self.proc

        def kill_if_still_running() -> None:
            if proc is self.proc and proc is not None and proc.returncode is None:
                self._signal(signal.SIGKILL, group=True)

        asyncio.get_running_loop().call_later(self.kill_grace, kill_if_still_running)
