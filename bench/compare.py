"""What failover-harness compare can tell on this machine, with its default ten runs a side.

    .venv/bin/python bench/compare.py [--runs 10] [--repeats 3] [--reports DIR] [-- extra compare args]

1. A/A: the same QEMU against itself, *repeats* times: how often anything is flagged.
2. A/B: a candidate whose QEMU processes share half a CPU (a cgroup quota, the ``half-cpu``
   wrapper): the metrics flagged, with their differences and intervals.
3. The smallest worsening of each headline metric that a comparison of *runs* against *runs*
   flags with 80 % power, by resampling the A/A runs' samples of that metric.

Prints the figures; each comparison's compare.json and compare.html stay under --reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.e2e.cpu_quota: the cgroup the half-cpu wrapper joins

from harness.compare.judgement import PracticalRule, smallest_detectable_shift  # noqa: E402
from harness.compare.samples import metric_kind  # noqa: E402
from harness.trend import HEADLINE  # noqa: E402
from tests.e2e.cpu_quota import cpu_quota_cgroup  # noqa: E402

HALF_CPU = REPO / "tests" / "e2e" / "qemu-wrappers" / "half-cpu"


def run_compare(reports: Path, runs: int, extra: list[str]) -> tuple[float, dict[str, Any]]:
    argv = [sys.executable, "-m", "harness.cli", "compare", "--runs", str(runs), "--reports", str(reports), *extra]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, text=True, stdout=subprocess.PIPE, check=False)
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stdout[-3000:])
        raise SystemExit(f"compare into {reports} failed with {proc.returncode}")
    return wall, json.loads((reports / "compare.json").read_text())


def flagged(document: dict[str, Any]) -> list[str]:
    return [f"{m['case'].rsplit('::', 1)[-1]} {m['name']} {m['verdict']} {m['difference']:+.4g} {m['unit']} "
            f"[{m['interval'][0]:+.4g}, {m['interval'][1]:+.4g}] p {m['p_adjusted']:.2g}"
            for m in document["metrics"] if m["verdict"] in ("regressed", "improved")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="A/A comparisons")
    parser.add_argument("--reports", type=Path, default=Path("reports/bench-compare"))
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more compare arguments")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]

    pools: dict[tuple[str, str], list[float]] = {}
    judged = 0
    for repeat in range(1, args.repeats + 1):
        wall, document = run_compare(args.reports / f"aa-{repeat}", args.runs, extra)
        judged = len(document["metrics"])
        hits = flagged(document)
        print(f"A/A {repeat}: {wall / 60:.1f} min, {judged} metrics judged, flagged {len(hits)}"
              + "".join(f"\n    {h}" for h in hits), flush=True)
        for m in document["metrics"]:
            pools.setdefault((m["case"], m["name"]), []).extend(m["baseline"] + m["candidate"])

    with cpu_quota_cgroup(0.5):
        wall, document = run_compare(args.reports / "half-cpu", args.runs, ["--candidate-qemu", str(HALF_CPU), *extra])
    print(f"A/B half a CPU: {wall / 60:.1f} min, exit status {document['exit_status']}, flagged:"
          + "".join(f"\n    {h}" for h in flagged(document)), flush=True)

    rule = PracticalRule()
    print(f"\nsmallest worsening detected with 80 % power, {args.runs} runs a side, Holm over {judged} metrics:")
    for (case, name), pool in sorted(pools.items()):
        kind = metric_kind(name)
        if name not in HEADLINE or kind is None or len(set(pool)) < 2:
            continue
        unit, better = kind
        shift = smallest_detectable_shift(pool, args.runs, unit, better, rule, metrics_judged=judged)
        median = statistics.median(pool)
        share = f" ({shift / abs(median):.0%} of its median {median:.4g})" if median else ""
        print(f"    {case.rsplit('::', 1)[-1]:<48} {name:<30} {shift:8.4g} {unit}{share}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
