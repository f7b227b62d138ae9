"""What every benchmark shares: percentiles, machine facts, and the result file.

Each benchmark writes `bench/results/<name>.json` with its figures, the machine it ran on
and the git revision, and prints a table. Figures with a baseline are printed as ratios
measured in the same run, since absolute times on shared machines vary.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


MIN_P95_SAMPLES = 20  # fewer samples than this: the p95 is not claimed, the maximum is


def tail(stats: dict[str, float]) -> str:
    """The tail statistic a `summary` supports: "p95" with enough samples, else "max"."""
    return "p95" if stats["n"] >= MIN_P95_SAMPLES else "max"


def effective_flags(argv: Sequence[str]) -> list[str]:
    """A command line as argparse reads it: of a repeated `--flag=value`, the last value,
    in the place of the first (OperatorProcess puts its test timers before the overrides)."""
    last: dict[str, str] = {}
    for arg in argv:
        last[arg.split("=", 1)[0]] = arg
    return list(last.values())


def operator_flags(argv: Sequence[str]) -> list[str]:
    """An operator's command line (`python -m voicefleet_operator ...`) as it took effect."""
    return effective_flags(argv[3:])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Run:
    """When and on what a benchmark ran: start and end time, the revision at start (and
    whether the tree was dirty then), the machine's load before and after (a loaded
    machine explains slow figures), the benchmark's own flags and the operator's."""

    flags: list[str]
    operator_flags: list[str] = field(default_factory=list)
    started: str = field(default_factory=_now)
    revision: str = field(default_factory=lambda: machine()["git_revision"])
    load_before: list[float] = field(default_factory=lambda: list(os.getloadavg()))

    def record(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "ended": _now(),
            "revision_at_start": self.revision,
            "dirty_at_start": self.revision.endswith("-dirty"),
            "flags": self.flags,
            "operator_flags": self.operator_flags,
            "load_before": self.load_before,
            "load_after": list(os.getloadavg()),
        }


def summary(values: Sequence[float], min_p95_n: int = MIN_P95_SAMPLES) -> dict[str, float]:
    """n, p50, p95 and max; no p95 from fewer than `min_p95_n` samples (nearest rank would
    just be the maximum again): every result file follows that rule by default."""
    out = {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95)}
    if len(values) < min_p95_n:
        del out["p95"]
    return out | {"max": max(values) if values else math.nan}


def idle_per_unit(cpu_per_second: float, voiceagents: int, pods: int) -> dict[str, float]:
    """The operator's idle CPU per VoiceAgent and per worker pod, in millicores (thousandths
    of a core), so that runs of different sizes show how the cost grows."""
    return {
        "idle_cpu_millicores_per_voiceagent": 1000 * cpu_per_second / voiceagents
        if voiceagents
        else math.nan,
        "idle_cpu_millicores_per_worker_pod": 1000 * cpu_per_second / pods if pods else math.nan,
    }


def machine() -> dict[str, Any]:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                # bench/results/ is what benchmarks write, not what they run
                ["git", "status", "--porcelain", "--", ".", ":!bench/results"],
                cwd=REPO,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        rev, dirty = "unknown", False
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "git_revision": rev + ("-dirty" if dirty else ""),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "when": _now(),
    }


@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)  # figure -> target, e.g. "< 2.0"
    notes: list[str] = field(default_factory=list)
    run: Run | None = None

    def meets(self) -> dict[str, bool]:
        out = {}
        for key, target in self.targets.items():
            value = _lookup(self.figures, key)
            op, _, bound = target.partition(" ")
            if isinstance(value, int | float) and not math.isnan(value):
                out[key] = value < float(bound) if op == "<" else value >= float(bound)
        return out

    def write(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        data = {
            "name": self.name,
            "figures": self.figures,
            "targets": self.targets,
            "meets_target": self.meets(),
            "notes": self.notes,
            "machine": machine(),
        }
        if self.run is not None:
            data["run"] = self.run.record()
        path.write_text(json.dumps(data, indent=2, default=_nan_safe) + "\n")
        return path

    def table(self) -> str:
        rows = [f"== {self.name} =="]
        meets = self.meets()
        for key, value in _flatten(self.figures):
            target = self.targets.get(key, "")
            mark = "" if key not in meets else ("  ok" if meets[key] else "  MISSES")
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            rows.append(f"  {key:<48} {shown:>12}  {target}{mark}")
        rows += [f"  note: {n}" for n in self.notes]
        return "\n".join(rows)

    def report(self) -> Path:
        path = self.write()
        print(self.table())
        print(f"  -> {path.relative_to(REPO)}")
        return path


def _nan_safe(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _lookup(d: dict[str, Any], dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur
