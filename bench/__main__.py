"""`make bench`: run every benchmark (or those named) and print a summary table.

python -m bench                 # all
python -m bench autoscale call  # some
"""

from __future__ import annotations

import importlib
import json
import sys

from bench.common import RESULTS

BENCHMARKS = ("reconcile", "autoscale", "call", "failover", "drops", "chaos")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"== {name} == not written yet")
            continue
        print(f"\n### running bench {name} (python -m bench.{name} runs it alone)")
        try:
            module.main()
        except Exception as e:  # one failing benchmark must not hide the others' figures
            print(f"bench {name} failed: {type(e).__name__}: {e}")
            failed.append(name)
    print("\n### summary (bench/results/*.json)")
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        meets = data.get("meets_target", {})
        ok = sum(meets.values())
        print(
            f"  {data['name']:<12} {ok}/{len(meets)} targets met   rev {data['machine']['git_revision']}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
