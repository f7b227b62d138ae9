"""Starting, finding and stopping the testbed's background processes by PID.

Each process runs in its own session (process group), so stopping it also stops what it
started. A PID is recorded with the process's start time, so a stale PID file that now
names an unrelated process (PID reuse after a reboot or a killed run) is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Timeout(RuntimeError):
    pass


class Abort(RuntimeError):
    """Raised by a `wait_for` check to stop waiting at once (e.g. the process died)."""


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    on_fail: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Abort:
            raise
        except Exception as e:  # a poll may fail while the thing starts
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            extra = f"\n{on_fail()}" if on_fail else ""
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ProcRef:
    name: str
    pid: int
    started: int  # start time in clock ticks, from /proc
    log: str

    def alive(self) -> bool:
        return start_time(self.pid) == self.started

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "started": self.started, "log": self.log}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ProcRef:
        return cls(str(d["name"]), int(str(d["pid"])), int(str(d["started"])), str(d["log"]))


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcRef:
    """Start `argv` in the background in its own session, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%H:%M:%S')} starting {name}: {argv[0]}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    started = start_time(proc.pid)
    if started is None:
        raise RuntimeError(f"{name} exited at once; see {log}")
    return ProcRef(name, proc.pid, started, str(log))


def _signal_group(ref: ProcRef, sig: signal.Signals) -> None:
    try:
        os.killpg(ref.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(ref.pid, sig)


def stop(ref: ProcRef, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL after `grace` seconds; reap if our child."""
    if not ref.alive():
        return
    _signal_group(ref, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(ref.pid)
        if not ref.alive():
            break
        time.sleep(0.05)
    else:
        _signal_group(ref, signal.SIGKILL)
    _signal_group(ref, signal.SIGKILL)  # stragglers left in the group
    _reap(ref.pid)


def kill(ref: ProcRef, timeout: float = 5.0) -> None:
    """SIGKILL the process group at once (a crash: no shutdown handler runs) and wait
    until the process is gone."""
    if not ref.alive():
        return
    _signal_group(ref, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while ref.alive() and time.monotonic() < deadline:
        _reap(ref.pid)
        time.sleep(0.02)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: str | Path, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
