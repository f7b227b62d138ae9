"""docs/benchmarks.md's figures, drawn from the result JSON only (nothing typed in).

python -m bench.plot [autoscale|call|reconcile ...]    # default: all
    bench/results/autoscale.json -> docs/img/autoscale-reaction.png
    bench/results/call.json      -> docs/img/call-capacity.png
    bench/results/reconcile.json -> docs/img/reconcile-stages.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from bench.common import REPO, RESULTS

IMG = REPO / "docs" / "img"
SYSTEMS = ("builtin", "hpa", "keda", "keda_defaults")
LABELS = {
    "builtin": "builtin",
    "hpa": "HPA\n(15 s sync)",
    "keda": "KEDA as rendered\n(polling 5 s)",
    "keda_defaults": "KEDA defaults\n(polling 30 s)",
}


def label(system: str, fig: dict[str, Any]) -> str:
    stats = fig["reaction_s"]
    tail = "p95" if "p95" in stats else "max"
    return (
        f"{LABELS[system]}\np50 {stats['p50']:.2g} s, {tail} {stats[tail]:.2g} s"
        f"\nn {stats['n']}, missed {fig.get('steps_missed', 0)}"
    )


def autoscale(data: dict[str, Any], out: Path) -> Path:
    """Every reaction sample per system, one panel per size, log time axis; a bar at the p50
    and at the p95 (the max when a system has fewer than 20 samples)."""
    sizes = sorted((k for k in data["figures"] if k.startswith("w")), key=lambda k: int(k[1:]))
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 4.2), sharey=True)
    for ax, key in zip([axes] if len(sizes) == 1 else axes, sizes, strict=True):
        size = data["figures"][key]
        present = [s for s in SYSTEMS if s in size]
        for x, system in enumerate(present):
            fig_s = size[system]
            samples = fig_s.get("reactions_s") or []
            n = len(samples)
            jitter = [x + 0.3 * ((i * 0.618) % 1 - 0.5) for i in range(n)]
            ax.scatter(jitter, samples, s=10, alpha=0.5, color=f"C{x}")
            stats = fig_s["reaction_s"]
            tail = "p95" if "p95" in stats else "max"
            for stat, style in (("p50", "-"), (tail, "--")):
                ax.hlines(stats[stat], x - 0.3, x + 0.3, colors="black", linestyles=style)
        ax.set_xticks(range(len(present)), [label(s, size[s]) for s in present], fontsize=7)
        workers = int(key[1:])
        ax.set_title(f"{workers} workers / {size['voiceagents']} VoiceAgents", fontsize=10)
        ax.set_yscale("log")
        ax.set_xlim(-0.6, len(present) - 0.4)
        ax.grid(axis="y", which="both", alpha=0.3)
    first = axes if len(sizes) == 1 else axes[0]
    first.set_ylabel("step -> new spec.replicas (s, log)")
    run = data.get("run", {})
    title = "autoscale reaction per step (solid p50, dashed p95, or max under 20 steps)"
    return _save(fig, f"{title}, rev {run.get('revision_at_start')}, {run.get('started')}", out)


def _save(fig: Any, title: str, out: Path) -> Path:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _sessions(levels: dict[str, Any]) -> list[int]:
    return sorted(int(k[1:]) for k in levels)


def call_capacity(data: dict[str, Any], out: Path) -> Path:
    """Per worker mode against concurrent sessions: the worker's CPU per session, its own
    share of the turn overhead (p95, or the max under 20 turns; the 50 ms target dashed),
    and its memory per session."""
    figs = data["figures"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (mode, levels) in enumerate(sorted(figs["worker"].items())):
        ns = _sessions(levels)
        at = [levels[f"n{n}"] for n in ns]
        color, label_ = f"C{i}", mode.replace("_resume_", ", resume ")
        axes[0].plot(ns, [lv["worker_cores_per_session"] for lv in at], "o-", color=color,
                     label=label_)  # fmt: skip
        own = figs["worker_minus_echo"].get(mode, {})
        pts = [(n, own[f"n{n}"].get("own_overhead_p95_ms")) for n in ns if f"n{n}" in own]
        pts = [(n, v) for n, v in pts if v is not None]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), "o-", color=color, label=label_)
        unanswered = [n for n, lv in zip(ns, at, strict=True) if lv["unanswered_turns"]]
        for n in unanswered:
            axes[1].axvline(n, color=color, alpha=0.15)
        axes[2].plot(ns, [lv["worker_mb_per_session"] for lv in at], "o-", color=color,
                     label=label_)  # fmt: skip
    axes[0].set_ylabel("worker CPU per session (cores)")
    axes[1].set_ylabel("worker's own overhead p95 (ms)")
    axes[1].set_title("dashed: 50 ms target; shaded: levels with turns unanswered", fontsize=8)
    axes[1].axhline(50, color="black", linestyle="--", linewidth=1)
    axes[1].set_yscale("symlog", linthresh=100)
    axes[2].set_ylabel("worker memory per session (MB PSS)")
    for ax in axes:
        ax.set_xlabel("concurrent sessions on one worker")
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    run = data.get("run", {})
    load = [round((run.get(k) or [0.0])[0], 1) for k in ("load_before", "load_after")]
    title = (
        f"call capacity per worker mode, rev {run.get('revision_at_start')}, "
        f"{run.get('started')}, 1-min load {load[0]} before, {load[1]} after"
    )
    return _save(fig, title, out)


# bench/reconcile.py's STAGES as bars: who moves each step.
STAGE_BARS = (
    ("created_to_deployment", "operator: create -> Deployment"),
    ("deployment_to_replicaset", "kube-controller-manager: -> ReplicaSet"),
    ("replicaset_to_pod", "kube-controller-manager: -> pod"),
    ("pod_to_pod_scheduled", "kube-scheduler: -> scheduled"),
    ("pod_scheduled_to_pod_ready", "node agent: -> pod Ready"),
    ("pod_ready_to_deployment_ready", "kube-controller-manager: -> Deployment ready"),
    ("deployment_ready_to_ready", "operator: -> VoiceAgent Ready"),
)


def reconcile_stages(data: dict[str, Any], out: Path) -> Path:
    """Where create -> Ready goes per size: each step's p50 stacked (who moves it), beside
    the same-run baseline of plain Deployments (replicas 1) from create to Ready (p50)."""
    sizes = sorted((k for k in data["figures"] if int(k[1:]) >= 100), key=lambda k: int(k[1:]))
    fig, ax = plt.subplots(figsize=(9, 2.6 + 1.1 * len(sizes)))
    rows: list[str] = []
    for key in sizes:
        size = data["figures"][key]
        left = 0.0
        y = len(rows)
        for i, (stage, name) in enumerate(STAGE_BARS):
            width = size["stages_s"][stage].get("p50", 0.0)
            ax.barh(y, width, left=left, color=f"C{i}", label=name if key == sizes[0] else None)
            left += width
        rows.append(f"{int(key[1:]):,} VoiceAgents")
        plain = size.get("baseline_plain_deployments_ready", {}).get("create_to_ready_s", {})
        if "p50" in plain:
            ax.barh(len(rows), plain["p50"], color="0.6", label="plain Deployments -> Ready"
                    if key == sizes[0] else None)  # fmt: skip
            rows.append(f"{int(key[1:]):,} plain Deployments")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from create (p50 of each step, stacked)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3)
    ax.grid(axis="x", alpha=0.3)
    run = data.get("run", {})
    title = "reconcile: create -> Ready, step by step"
    return _save(fig, f"{title}, rev {run.get('revision_at_start')}, {run.get('started')}", out)


PLOTS = {
    "autoscale": (autoscale, "autoscale.json", "autoscale-reaction.png"),
    "call": (call_capacity, "call.json", "call-capacity.png"),
    "reconcile": (reconcile_stages, "reconcile.json", "reconcile-stages.png"),
}


def main(argv: list[str]) -> int:
    for name in argv or list(PLOTS):
        if name not in PLOTS:
            print(f"bench.plot: unknown plot {name!r}; one of {', '.join(PLOTS)}")
            return 2
        draw, src, png = PLOTS[name]
        out = draw(json.loads((RESULTS / src).read_text()), IMG / png)
        print(f"-> {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
