"""Benchmark 3 (issue 8 item 3): what a caller waits for, and how many calls one worker holds.

Real callers (`voicefleet_testbed.caller`, real WebRTC through the testbed's LiveKit
server) call ONE real worker (`python -m voicefleet_worker` as a plain process, as the
node agent runs a pod) whose model is the Realtime stand-in, the one double. For each
concurrency level N (default 1, 5, 10, 15, 20, 25, 30, 40, 50), N callers join N rooms at
once (a 50 ms ramp) and speak `--turns` turns each:

- **dispatch**: from the caller starting to join to an agent participant being present
  in its room (`CallReport.dispatch_s`): room creation, LiveKit's dispatch, the worker's
  job start, the agent joining. Target p95 < 500 ms.
- **turn overhead**: the caller-perceived turn latency (`TurnResult.latency_s`: from the
  moment its last voiced frame has played out to the first agent audio it hears above
  -45 dBFS) MINUS the stand-in's `modelDelayMs` (the model's thinking time) MINUS the
  turn-detection silence window (`silenceDurationMs`, the quiet the model's VAD waits for
  before it ends the caller's turn). What is left is everything voicefleet, livekit-agents,
  the plugin and WebRTC add: uplink transport, the worker's audio path to the model
  (resampling, the Realtime WebSocket), the answer's way back, jitter buffers and the
  caller's 10 ms metering. Target p95 < 50 ms.

Baseline, same run, at every level (`--echo-sizes`): the same callers against an **echo
agent** per room (an rtc participant of kind AGENT, all in one process of their own,
`voicefleet_testbed.caller.echo`: the stand-in's energy VAD with the same silence window,
then a tone after the same fixed delay). Its overhead is WebRTC transport both ways
(Opus packetisation, the receivers' jitter buffers) plus the caller's measuring: what any
agent pays before doing work of its own. The worker's own share is the difference
(`worker_minus_echo`, p95 minus p95, with the p50 ratio).

Each level runs once per worker mode: where jobs run (`--executors process,thread`:
livekit-agents' job processes, or threads of the worker process) times
`failover.resumeConversation` (`--resume on`, the default: a sealed summary written to the
room's metadata after every turn; `off`; or `on,off`). One worker per mode, all registered
from the start and called one after the other at each level, so they see the same machine.
A mode is named `<executor>_resume_<on|off>`. A level gives every
call `max(--turns, ceil(20 / N))` turns, so at least 20 turns stand behind every p95.

The maximum: `max_sessions_within_target` is the last level before the first one where
the worker's own share of overhead p95 reaches 50 ms (or a turn goes unanswered, or a
call fails); `crossed_at_sessions` is that level. The raw overhead's 50 ms target is
reported too. Every requested level runs, answered or not (only `--budget-seconds`
stops the ladder early), and `max_sessions_all_turns_answered` says what the worker
still holds at all.

Also per level: the worker's own view of the same turns (its turn-latency histogram, from
the model's VAD ending the turn to the first audio frame it sends, minus the model delay),
the worker's CPU (cores, and per session) and memory, the callers' process CPU, and the
machine's load average. The worker's CPU and memory are its whole process tree (the worker
process, livekit-agents' forkserver and job processes: every process of the worker's
session, with the CPU of the job processes that ended, which their parent has reaped);
memory is PSS, so pages the job processes share are counted once, and memory per session
is the level's peak minus the idle worker's, divided by the sessions.

python -m bench.call [--sizes 1,5,10,...] [--turns 3] [--echo-sizes 1,10]
    [--executors process,thread] [--resume on,off]
    [--model-delay-ms 200] [--silence-ms 300] [--budget-seconds 420]
    [--profile [--profile-at 10]]   (py-spy on PATH: samples the worker during that level)
(env: BENCH_CALL_SIZES, BENCH_CALL_TURNS, BENCH_CALL_ECHO_SIZES, BENCH_CALL_EXECUTORS,
BENCH_CALL_RESUME; VOICEFLEET_TESTBED=<dir>
reuses a running stack, else one is started in a temporary directory and stopped after.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import MIN_P95_SAMPLES, REPO, Result, Run, percentile, summary
from tests.worker.proc import WorkerProc, worker_proc
from tests.worker.util import agent_config
from voicefleet_contract import Env
from voicefleet_testbed.caller import Caller
from voicefleet_testbed.procs import Timeout, wait_for
from voicefleet_testbed.realtime import StandInClient
from voicefleet_testbed.stack import LIVEKIT_KEY, Stack

CLK_TCK = os.sysconf("SC_CLK_TCK")
OVERHEAD_TARGET_S = 0.050
DISPATCH_TARGET_S = 0.500
SHARED_NOTE = (
    "one machine: the callers, LiveKit, the stand-in and the worker share its cores "
    "(machine.cpus), so absolute figures are pessimistic; each level records the load "
    "average, and the run its load before and after"
)


# --- processes' cost ---------------------------------------------------------------------
def _stat(pid: int) -> list[str]:
    # the fields after the command name, which may hold spaces and parentheses
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(session: int) -> list[int]:
    """Every live process of a session (the worker's own: it starts one, its forkserver
    and job processes inherit it)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat(int(d.name))[3]) == session:
                    pids.append(int(d.name))
    return pids


def cpu_seconds(session: int) -> float:
    """CPU of the worker's process tree: each live process's own time plus that of its
    children it reaped (job processes that ended)."""
    total = 0
    for pid in tree(session):
        with contextlib.suppress(OSError, IndexError, ValueError):
            f = _stat(pid)
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def pss_mb(session: int) -> float:
    """Proportional set size of the worker's process tree: shared pages counted once."""
    kb = 0
    for pid in tree(session):
        with contextlib.suppress(OSError, IndexError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    kb += int(line.split()[1])
                    break
    return kb / 1024


def runqueue_waits(session: int) -> dict[int, float]:
    """Per thread of the worker's process tree: seconds spent runnable but waiting for a
    CPU (schedstat's second field): how starved it is, not how busy."""
    out: dict[int, float] = {}
    for pid in tree(session):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    out[int(task.name)] = int((task / "schedstat").read_text().split()[1]) / 1e9
    return out


def waited_since(before: dict[int, float], after: dict[int, float]) -> float:
    """Waiting added between two `runqueue_waits` reads, by the threads alive at the
    second (a thread that ended in between takes its waiting with it: an undercount,
    never negative)."""
    return sum(max(0.0, t - before.get(tid, 0.0)) for tid, t in after.items())


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread, the native WebRTC ones too
    return r.ru_utime + r.ru_stime


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# --- a level -----------------------------------------------------------------------------
@dataclass
class Level:
    target: str  # "worker" or "echo"
    n: int
    dispatch_s: list[float] = field(default_factory=list)
    connect_s: list[float] = field(default_factory=list)  # the caller's own room.connect
    latency_s: list[float] = field(default_factory=list)
    overhead_s: list[float] = field(default_factory=list)
    turns: int = 0
    unanswered: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    caller_cores: float = 0.0
    worker_cores: float = math.nan
    worker_runqueue_wait: float = math.nan  # seconds waiting for a CPU per wall second
    worker_pss_mb: float = math.nan  # the level's peak, the whole process tree
    idle_pss_mb: float = math.nan  # the same worker before the first level
    worker_turn_s: float = math.nan  # the worker's mean turn latency (its histogram)
    worker_turns: int = 0
    worker_dispatch_s: float = math.nan  # the worker's mean dispatch latency (its histogram)
    load: float = 0.0

    def overhead_p95(self) -> float:
        return percentile(self.overhead_s, 95)  # nearest rank: the ladder's decision

    def figures(self, model_delay_s: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sessions": self.n,
            "overhead_ms": _ms(summary(self.overhead_s)),
            "turn_latency_ms": _ms(summary(self.latency_s)),
            "caller_connect_ms": _ms(summary(self.connect_s)),
            "turns": self.turns,
            "unanswered_turns": self.unanswered,
            "errors": len(self.errors),
            "caller_process_cores": round(self.caller_cores, 2),
            "load_average": self.load,
            "wall_s": round(self.wall_s, 1),
        }
        if self.target == "worker":
            out["dispatch_ms"] = _ms(summary(self.dispatch_s))
            out["worker_cores"] = round(self.worker_cores, 2)
            out["worker_cores_per_session"] = round(self.worker_cores / self.n, 3)
            out["worker_runqueue_wait_s_per_s"] = round(self.worker_runqueue_wait, 2)
            out["worker_pss_mb"] = round(self.worker_pss_mb, 1)
            out["worker_mb_per_session"] = round(
                (self.worker_pss_mb - self.idle_pss_mb) / self.n, 1
            )
            out["worker_observed_overhead_ms_mean"] = round(
                (self.worker_turn_s - model_delay_s) * 1000, 1
            )
            out["worker_observed_dispatch_ms_mean"] = round(self.worker_dispatch_s * 1000, 1)
        return out


def _ms(s: dict[str, float]) -> dict[str, Any]:
    return {k: (v if k == "n" else round(v * 1000, 1)) for k, v in s.items()}


@dataclass
class Setup:
    stack: Stack
    agent: str
    standin: StandInClient
    model_delay_s: float
    silence_s: float
    turns: int
    speech_s: float
    workers: dict[str, WorkerProc] = field(default_factory=dict)  # mode -> its worker
    idle_pss_mb: dict[str, float] = field(default_factory=dict)  # mode -> before level 1

    def turns_at(self, n: int) -> int:
        """Turns per call at `n` sessions: at least MIN_P95_SAMPLES turns in the level."""
        return max(self.turns, math.ceil(MIN_P95_SAMPLES / n))


async def _calls(
    setup: Setup, level: Level, prefix: str, dispatch: str, agent_name: str | None
) -> None:
    stack = setup.stack

    async def one(i: int) -> None:
        await asyncio.sleep(i * 0.05)  # a ramp, not a thundering herd
        c = Caller(
            stack.livekit_url,
            LIVEKIT_KEY,
            stack.livekit_secret,
            room=f"{prefix}-{i}",
            agent_name=agent_name,
            identity=f"caller-{i}",
            dispatch=dispatch,
        )
        try:
            t0 = asyncio.get_running_loop().time()
            await c.connect()
            level.connect_s.append(asyncio.get_running_loop().time() - t0)
            if not await c.wait_agent(30):
                level.errors.append(f"{c.room_name}: no agent joined in 30 s")
                return
            if c.report.dispatch_s is not None:
                level.dispatch_s.append(c.report.dispatch_s)
            for _ in range(setup.turns_at(level.n)):
                t = await c.turn(setup.speech_s, timeout=15)
                level.turns += 1
                if t.latency_s is None:
                    level.unanswered += 1
                    continue
                level.latency_s.append(t.latency_s)
                level.overhead_s.append(t.latency_s - setup.model_delay_s - setup.silence_s)
        except Exception as e:  # a failed call is a figure, not the end of the benchmark
            level.errors.append(f"{c.room_name}: {type(e).__name__}: {e}")
        finally:
            await c.close()

    await asyncio.gather(*(one(i) for i in range(level.n)))


def _histogram(w: WorkerProc, name: str, level: Level) -> tuple[float, float]:
    """A histogram's sum and count; NaN when a starved worker does not answer /metrics for
    a minute (a finding of the level, noted, not the end of the run)."""
    try:
        m = wait_for(w.metrics, 60, "the worker's /metrics")
    except Timeout as e:
        level.errors.append(f"{name}: {e}")
        return math.nan, math.nan
    return m.get(f"{name}_sum", 0.0), m.get(f"{name}_count", 0.0)


async def worker_level(setup: Setup, n: int, mode: str) -> Level:
    w = setup.workers[mode]
    assert w.proc is not None
    level = Level("worker", n)
    turn_metric = "voicefleet_worker_turn_latency_seconds"
    dispatch_metric = "voicefleet_worker_dispatch_latency_seconds"
    s0, c0 = _histogram(w, turn_metric, level)
    d0, dc0 = _histogram(w, dispatch_metric, level)
    sid = w.proc.pid  # the worker leads its own session (start_new_session)
    cpu0, own0, t0 = cpu_seconds(sid), own_cpu_seconds(), time.monotonic()
    wait0 = runqueue_waits(sid)
    pss = 0.0

    async def sample_pss() -> None:
        nonlocal pss
        while True:
            pss = max(pss, await asyncio.to_thread(pss_mb, sid))
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample_pss())
    try:
        agent = worker_agent(setup.agent, mode)
        await _calls(setup, level, f"{agent}-{n}-{uuid.uuid4().hex[:4]}", "token", agent)
    finally:
        sampler.cancel()
    level.wall_s = time.monotonic() - t0
    level.worker_cores = (cpu_seconds(sid) - cpu0) / level.wall_s
    level.worker_runqueue_wait = waited_since(wait0, runqueue_waits(sid)) / level.wall_s
    level.caller_cores = (own_cpu_seconds() - own0) / level.wall_s
    level.worker_pss_mb = pss
    level.idle_pss_mb = setup.idle_pss_mb.get(mode, math.nan)
    level.load = load_average()
    s1, c1 = _histogram(w, turn_metric, level)
    level.worker_turns = int(c1 - c0) if c1 > c0 else 0  # False for NaN: no answer
    level.worker_turn_s = (s1 - s0) / (c1 - c0) if c1 > c0 else math.nan
    d1, dc1 = _histogram(w, dispatch_metric, level)
    level.worker_dispatch_s = (d1 - d0) / (dc1 - dc0) if dc1 > dc0 else math.nan
    # the sessions end before the next level starts (a condition, polled); one that
    # outlives its caller by a minute is a finding of the level, not the end of the run
    try:
        await asyncio.to_thread(
            wait_for, lambda: w.sessions().activeSessions == 0, 60, "the level's sessions ended"
        )
    except Timeout:
        try:
            left: int | str = wait_for(w.sessions, 60, "the worker's /sessions").activeSessions
        except Timeout:
            left = "unknown (no answer from /sessions)"
        level.errors.append(f"{left} session(s) still active 60 s after their callers left")
    return level


async def echo_level(setup: Setup, n: int) -> Level:
    level = Level("echo", n)
    stack = setup.stack
    prefix = f"echo-{n}-{uuid.uuid4().hex[:4]}"
    env = {
        **os.environ,
        "LIVEKIT_URL": stack.livekit_url,
        "LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LIVEKIT_API_SECRET": stack.livekit_secret,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicefleet_testbed.caller.echo",
        f"--room-prefix={prefix}", f"--count={n}",
        f"--delay-ms={round(setup.model_delay_s * 1000)}",
        f"--silence-ms={round(setup.silence_s * 1000)}",
        "--answer-ms=800",
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"READY":
            raise RuntimeError(f"echo agents did not start: {line!r}")
        cpu0, own0, t0 = cpu_seconds(proc.pid), own_cpu_seconds(), time.monotonic()
        await _calls(setup, level, prefix, "none", None)
        level.wall_s = time.monotonic() - t0
        level.worker_cores = (cpu_seconds(proc.pid) - cpu0) / level.wall_s
        level.caller_cores = (own_cpu_seconds() - own0) / level.wall_s
        level.load = load_average()
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()  # the agents leave when stdin closes
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return level


# --- the run -----------------------------------------------------------------------------
@contextlib.contextmanager
def testbed() -> Iterator[Stack]:
    reuse = os.environ.get("VOICEFLEET_TESTBED")
    if reuse:
        s = Stack(Path(reuse))
        running = s.running()
        if running and all(running.values()):
            yield s
            return
    tmp = Path(tempfile.mkdtemp(prefix="bench-call-"))
    s = Stack(tmp, progress=lambda m: print(f"[testbed] {m}"))
    s.up()
    try:
        yield s
    finally:
        s.down(quiet=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


EXECUTORS = ("process", "thread")
RESUME = ("on", "off")


def _choices(flag: str, allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        got = [m.strip() for m in text.split(",") if m.strip()]
        if not got or any(m not in allowed for m in got):
            raise argparse.ArgumentTypeError(
                f"{flag}: expected a list of {', '.join(allowed)}, got {text!r}"
            )
        return got

    return parse


def modes(executors: list[str], resume: list[str]) -> list[str]:
    """One worker per executor and resume setting, named `<executor>_resume_<on|off>`."""
    return [f"{e}_resume_{r}" for e in executors for r in resume]


def executor_of(mode: str) -> str:
    return mode.split("_", 1)[0]


def worker_agent(agent: str, mode: str) -> str:
    """The agent name of one mode's worker (each mode's calls go to its own worker)."""
    return f"{agent}-{mode.replace('_resume_', '-')}"


def _echo_sizes(text: str) -> list[int] | None:
    return None if text.strip() == "all" else _ints(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench.call", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=_ints, default=_ints(env("BENCH_CALL_SIZES", "1,5,10,20")))
    p.add_argument(
        "--echo-sizes",
        type=_echo_sizes,
        default=_echo_sizes(env("BENCH_CALL_ECHO_SIZES", "all")),
        help="levels with an echo baseline: all (default) or a list",
    )
    p.add_argument("--turns", type=int, default=int(env("BENCH_CALL_TURNS", "3")))
    p.add_argument("--speech-seconds", type=float, default=1.0)
    p.add_argument("--model-delay-ms", type=int, default=200)
    p.add_argument("--silence-ms", type=int, default=300)
    p.add_argument("--response-ms", type=int, default=800)
    executors = _choices("--executors", EXECUTORS)
    p.add_argument(
        "--executors",
        type=executors,
        default=executors(env("BENCH_CALL_EXECUTORS", "process,thread")),
        help="where the worker runs jobs: process, thread, or both (process,thread)",
    )
    resume = _choices("--resume", RESUME)
    p.add_argument(
        "--resume",
        type=resume,
        default=resume(env("BENCH_CALL_RESUME", "on")),
        help="failover.resumeConversation: on, off, or both (on,off)",
    )
    p.add_argument("--budget-seconds", type=float, default=1200, help="stop climbing after this")
    p.add_argument("--profile", action="store_true", help="py-spy the worker at one level")
    p.add_argument("--profile-at", type=int, default=10, help="the level to profile (10)")
    p.add_argument("--note", action="append", default=[], help="a note for the result file")
    args = p.parse_args(argv)
    args.modes = modes(args.executors, args.resume)
    args.argv = list(argv or [])
    return args


def start_worker(
    stack: Stack, agent: str, mode: str, base: Path, capacity: int, silence_ms: int
) -> WorkerProc:
    config = agent_config(
        namespace="bench",
        voiceAgent=f"bench-call-{mode.replace('_resume_', '-')}",
        agentName=worker_agent(agent, mode),
        livekitURL=stack.livekit_url,
        model={
            "instructions": "You are a benchmark agent.",
            "turnDetection": {"type": "server_vad", "silenceDurationMs": silence_ms},
        },
        sessions={"maxPerWorker": capacity, "drainTimeoutSeconds": 5},
        failover={"resumeConversation": mode.endswith("_resume_on")},
    )
    w = worker_proc(
        base / mode,
        config,
        {
            Env.LIVEKIT_URL: stack.livekit_url,
            Env.LIVEKIT_API_KEY: LIVEKIT_KEY,
            Env.LIVEKIT_API_SECRET: stack.livekit_secret,
        },
        OPENAI_BASE_URL=stack.openai_base_url(agent),
        **{Env.JOB_EXECUTOR: executor_of(mode)},
    )
    w.start()
    w.wait_registered(120)
    return w


def stop_worker(w: WorkerProc) -> None:
    w.terminate()
    try:
        w.wait(30)
    except subprocess.TimeoutExpired:
        w.kill()


async def run(args: argparse.Namespace, stack: Stack, base: Path) -> Result:
    agent = f"bench-call-{uuid.uuid4().hex[:6]}"
    standin = StandInClient(stack.realtime_url, scenario=agent)
    await standin.configure(modelDelayMs=args.model_delay_ms, responseMs=args.response_ms)
    setup = Setup(
        stack, agent, standin, args.model_delay_ms / 1000, args.silence_ms / 1000,
        args.turns, args.speech_seconds,
    )  # fmt: skip
    run_info = Run(flags=list(args.argv))
    t_start = time.monotonic()
    echo: dict[int, Level] = {}
    levels: dict[str, list[Level]] = {m: [] for m in args.modes}
    profile: dict[str, Any] = {}
    try:
        for mode in args.modes:
            w = setup.workers[mode] = await asyncio.to_thread(
                start_worker, stack, agent, mode, base, max(args.sizes), args.silence_ms
            )
            assert w.proc is not None
            setup.idle_pss_mb[mode] = await asyncio.to_thread(pss_mb, w.proc.pid)
        for n in args.sizes:
            if args.echo_sizes is None or n in args.echo_sizes:
                print(f"  echo baseline, {n} session(s), {setup.turns_at(n)} turns ...", flush=True)
                try:
                    e = echo[n] = await echo_level(setup, n)
                except Exception as exc:  # a level the machine cannot start is a figure too
                    e = echo[n] = _did_not_run("echo", n, exc)
                print(f"    overhead p50/p95 {_fmt(e.overhead_s)}; {e.unanswered} unanswered")
            for mode in args.modes:
                try:
                    lv = await _worker_step(args, setup, base, n, mode, echo, profile)
                except Exception as exc:
                    lv = _did_not_run("worker", n, exc)
                levels[mode].append(lv)
            # Every requested level runs, failing or not (a level past the machine's
            # capacity is a figure too); only the time budget stops the ladder.
            if time.monotonic() - t_start > args.budget_seconds:
                print(f"  budget of {args.budget_seconds:.0f} s spent: the ladder stops here")
                break
    finally:
        for w in setup.workers.values():
            stop_worker(w)
    r = result(args, echo, levels, profile)
    r.run = run_info
    return r


def _did_not_run(target: str, n: int, exc: Exception) -> Level:
    """A level that failed before it had figures: its error, and the load it met."""
    print(f"    the level did not run: {type(exc).__name__}: {exc}", flush=True)
    lv = Level(target, n, errors=[f"the level did not run: {type(exc).__name__}: {exc}"])
    lv.load = load_average()
    return lv


def _failing(lv: Level) -> bool:
    return bool(lv.unanswered or lv.errors)


async def _worker_step(
    args: argparse.Namespace,
    setup: Setup,
    base: Path,
    n: int,
    mode: str,
    echo: dict[int, Level],
    profile: dict[str, Any],
) -> Level:
    """One mode's worker at one level, printed as it ends (and py-spied when asked)."""
    w = setup.workers[mode]
    first = mode == args.modes[0]
    profiler = (
        _start_profile(w, base, n) if args.profile and n == args.profile_at and first else None
    )
    print(f"  worker ({mode}), {n} concurrent session(s) ...", flush=True)
    lv = await worker_level(setup, n, mode)
    if profiler is not None:
        profile.update(_stop_profile(*profiler))
    own = own_overhead(lv, echo)
    print(
        f"    dispatch p50/p95 {_fmt(lv.dispatch_s)}; overhead p50/p95 "
        f"{_fmt(lv.overhead_s)}; worker's own p95 {own * 1000:.0f} ms; "
        f"{lv.unanswered} unanswered, {len(lv.errors)} errors; "
        f"worker {lv.worker_cores:.2f} cores ({lv.worker_cores / n:.3f} a session), "
        f"{lv.worker_pss_mb:.0f} MB, waited for a CPU "
        f"{lv.worker_runqueue_wait:.2f} s/s; load {lv.load}",
        flush=True,
    )
    return lv


def _fmt(values: list[float]) -> str:
    return f"{percentile(values, 50) * 1000:.0f}/{percentile(values, 95) * 1000:.0f} ms"


def baseline_for(n: int, echo: dict[int, Level]) -> Level | None:
    """The echo baseline at the same concurrency, else the nearest lower one measured."""
    lower = [k for k in echo if k <= n and echo[k].overhead_s]
    return echo[max(lower)] if lower else None


def own_overhead(lv: Level, echo: dict[int, Level]) -> float:
    """The worker's own share of the overhead p95: minus the echo baseline's p95."""
    base = baseline_for(lv.n, echo)
    return lv.overhead_p95() - (base.overhead_p95() if base is not None else 0.0)


def _ok(lv: Level, echo: dict[int, Level]) -> bool:
    return (
        bool(lv.overhead_s)
        and own_overhead(lv, echo) < OVERHEAD_TARGET_S
        and not lv.unanswered
        and not lv.errors
    )


def result(
    args: argparse.Namespace,
    echo: dict[int, Level],
    levels: dict[str, list[Level]],
    profile: dict[str, Any],
) -> Result:
    """Figures per worker mode (`worker.<mode>.n<N>`, `worker_minus_echo.<mode>.n<N>`,
    `max_sessions_within_target.<mode>`, ...), the echo baseline once."""
    delay = args.model_delay_ms / 1000
    r = Result("call")
    r.figures["subtracted_ms"] = {
        "model_delay": args.model_delay_ms,
        "turn_detection_silence": args.silence_ms,
    }
    r.figures["echo_baseline"] = {f"n{n}": e.figures(delay) for n, e in sorted(echo.items())}
    for key in (
        "worker",
        "worker_minus_echo",
        "max_sessions_within_target",
        "max_sessions_all_turns_answered",
        "crossed_at_sessions",
        "largest_level_run",
    ):
        r.figures[key] = {}
    for mode, runs in levels.items():
        _mode_figures(r, mode, echo, runs, delay)
    if profile:
        r.figures["profile"] = profile
    turns = ", ".join(f"{n}: {max(args.turns, math.ceil(MIN_P95_SAMPLES / n))}" for n in args.sizes)
    r.notes += [
        SHARED_NOTE,
        "overhead = caller-perceived turn latency (the caller's last voiced frame played out "
        "-> first agent audio heard above -45 dBFS) - the stand-in's modelDelayMs - the "
        "turn-detection silenceDurationMs; the echo baseline subtracts the same two (its "
        "fixed delay and its VAD's silence window) from the same callers",
        "worker_minus_echo: the worker's own share, its overhead minus the echo baseline's at "
        "the same concurrency (p95 minus p95); max_sessions_within_target and "
        "crossed_at_sessions use it (own p95 < 50 ms, every turn answered)",
        "worker_observed_*: the worker's own histograms (dispatch: job offer -> agent ready in "
        "the room; turn: the model's VAD ending the turn -> first audio frame into the room, "
        "minus modelDelayMs), means over the level",
        "modes <executor>_resume_<on|off>: process = jobs in livekit-agents' job processes "
        "(warm pool), thread = jobs in threads of the worker process; resume_on = "
        "failover.resumeConversation on (the default; a sealed summary written to the room "
        f"metadata after every turn). One worker per mode (maxPerWorker {max(args.sizes)}), "
        "all registered throughout, called one after the other at each level",
        "worker_cores, worker_pss_mb: the worker's whole process tree (worker process, "
        "forkserver, job processes, and the CPU of ended job processes reaped by their "
        "parent); worker_mb_per_session = (the level's peak PSS - the idle worker's) / "
        "sessions",
        f"turns per call by level ({turns}) of {args.speech_seconds:.1f} s speech, "
        f"{args.response_ms} ms answers; a p95 only where a level has at least "
        f"{MIN_P95_SAMPLES} samples (else n, p50 and max); callers and their metering share "
        "one Python process",
        *args.note,
    ]
    for lv in [*echo.values(), *(lv for runs in levels.values() for lv in runs)]:
        for err in lv.errors[:3]:
            r.notes.append(f"{lv.target} n{lv.n} error: {err}")
    return r


def _mode_figures(
    r: Result, mode: str, echo: dict[int, Level], levels: list[Level], delay: float
) -> None:
    r.figures["worker"][mode] = {f"n{lv.n}": lv.figures(delay) for lv in levels}
    vs: dict[str, Any] = {}
    for lv in levels:
        base = baseline_for(lv.n, echo)
        if base is None or not lv.overhead_s:
            continue
        wp50, ep50 = summary(lv.overhead_s)["p50"], summary(base.overhead_s)["p50"]
        vs[f"n{lv.n}"] = {
            "echo_level": base.n,
            "own_overhead_p50_ms": round((wp50 - ep50) * 1000, 1),
            "overhead_p50_ratio": round(wp50 / ep50, 2) if ep50 > 0 else "n/a",
        }
        if min(len(lv.overhead_s), len(base.overhead_s)) >= MIN_P95_SAMPLES:
            vs[f"n{lv.n}"]["own_overhead_p95_ms"] = round(own_overhead(lv, echo) * 1000, 1)
    r.figures["worker_minus_echo"][mode] = vs
    max_ok = 0
    crossed: int | str = "not reached"
    for lv in levels:
        if not _ok(lv, echo):
            crossed = lv.n
            break
        max_ok = lv.n
    r.figures["max_sessions_within_target"][mode] = max_ok
    held = 0
    for lv in levels:
        if _failing(lv):
            break
        held = lv.n
    r.figures["max_sessions_all_turns_answered"][mode] = held
    r.figures["crossed_at_sessions"][mode] = crossed
    r.figures["largest_level_run"][mode] = levels[-1].n if levels else 0
    shown = sorted({n for n in (1, 10) if any(lv.n == n for lv in levels)} | {levels[-1].n})
    for n in shown if levels else []:
        at = f"{mode}.n{n}"
        r.targets[f"worker.{at}.dispatch_ms.p95"] = f"< {DISPATCH_TARGET_S * 1000:.0f}"
        r.targets[f"worker.{at}.overhead_ms.p95"] = f"< {OVERHEAD_TARGET_S * 1000:.0f}"
        if f"n{n}" in vs:
            r.targets[f"worker_minus_echo.{at}.own_overhead_p95_ms"] = (
                f"< {OVERHEAD_TARGET_S * 1000:.0f}"
            )


# --- profiling ---------------------------------------------------------------------------
def _start_profile(
    w: WorkerProc, base: Path, n: int
) -> tuple[subprocess.Popen[bytes], Path] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() or w.proc is None:
        print("  (py-spy not installed: no profile)")
        return None
    out = base / f"worker-n{n}.txt"
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(w.proc.pid), "--format", "raw", "--rate", "50",
         "--threads", "--full-filenames", "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    return proc, out


IDLE = ("select", "wait", "_worker", "get", "sleep", "_recv", "recv_into", "acquire")


def _idle(frame: str) -> bool:
    """A leaf frame that waits (the event loop's poll, a lock, a queue): not work."""
    return frame.partition(" (")[0].rsplit(".", 1)[-1] in IDLE


PACKAGES = (
    ("livekit/agents", "livekit-agents"),
    ("livekit/plugins/openai", "livekit-plugins-openai"),
    ("livekit/rtc", "livekit rtc (FFI)"),
    ("voicefleet_worker", "voicefleet_worker"),
    ("aiohttp", "aiohttp"),
    ("prometheus_client", "prometheus_client"),
    ("numpy", "numpy"),
    ("asyncio", "asyncio"),
)


def _package(frame: str) -> str:
    return next((name for key, name in PACKAGES if key in frame), "other")


def _short(frame: str) -> str:
    """`func (/long/path/file.py:12)` -> `func (file.py:12)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}"[:100]


def _stop_profile(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    """py-spy's samples of the worker: where its active (non-waiting) time goes."""
    proc.send_signal(2)  # SIGINT: py-spy writes its samples and exits
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if not out.exists():
        return {}
    leaf: dict[str, int] = {}
    by_package: dict[str, int] = {}
    samples = active = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        samples += c
        frames = [f for f in stack.split(";") if not f.startswith("thread (")]
        if not frames or _idle(frames[-1]):
            continue
        active += c
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + c
        # the innermost frame of a package that is not the event loop itself
        owner = next((_package(f) for f in reversed(frames) if _package(f) != "asyncio"), "asyncio")
        by_package[owner] = by_package.get(owner, 0) + c
    keep = REPO / "bench" / "results" / "call-profile.txt"
    keep.write_text(out.read_text(errors="replace"))
    top = sorted(leaf.items(), key=lambda kv: -kv[1])[:10]
    return {
        "samples": samples,
        "active_share": round(active / samples, 3) if samples else 0,
        "active_by_package": {
            k: round(v / active, 3) for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])
        }
        if active
        else {},
        "active_top_frames": {_short(k): round(v / active, 3) for k, v in top} if active else {},
        "raw": str(keep.relative_to(REPO)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-call-w-"))
    try:
        with testbed() as stack:
            r = asyncio.run(run(args, stack, base))
    except BaseException:
        print(f"bench.call failed: the workers' logs are kept in {base}/<mode>/worker.log")
        raise
    r.report()
    if any("error:" in n for n in r.notes):
        print(f"  errors above: the workers' logs are kept in {base}/<mode>/worker.log")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
