"""docs/benchmarks.md's figures, drawn from the result JSON only (nothing typed in).

python -m bench.plot    # bench/results/autoscale.json -> docs/img/autoscale-reaction.png
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
    fig.suptitle(
        f"autoscale reaction per step (solid p50, dashed p95, or max under 20 steps), rev {run.get('revision_at_start')}, "
        f"{run.get('started')}",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else RESULTS / "autoscale.json"
    out = autoscale(json.loads(src.read_text()), IMG / "autoscale-reaction.png")
    print(f"-> {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
