"""How fast the harness itself is, all figures from one run of this script (the machine is shared and noisy).

    .venv/bin/python bench/harness_speed.py [--runs 3] [--full-suite]

1. The probe case (ACPI): cold-boot source (--no-snapshots), restored source
   alone in its pytest process, and restored after another case in the same
   process (as in a suite): test start→verdict (setup + call), the whole case
   (with teardown), and the ratio to QEMU's own migration total-time; the goal
   is restored start→verdict ≤ 3 × total-time + 2 s.
2. The suite's non-timing cases with -n 1 and -n 2 (goal: -n 2 at least 1.6× faster);
   with --full-suite, the whole suite too (timing cases run alone under either).
3. Peak QEMU memory per case (VmHWM of the case's largest QEMU) from those runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from suite_run import run_cases  # bench/ is on sys.path when a script runs

PROBE_CASE = "under_probes and acpi"
# Run first in the same pytest process, so that the probe case is measured as it runs
# in a suite: not paying what a process pays once (apt's answer, matplotlib's import).
WARM_UP_CASE = "degraded_destination and absent"


def probe_case(runs: int, *args: str, in_a_run: bool = False) -> list[dict[str, float]]:
    rows = []
    for _ in range(runs):
        selection = f"({PROBE_CASE}) or ({WARM_UP_CASE})" if in_a_run else PROBE_CASE
        _, tests = run_cases("-k", selection, *args)
        (test,) = (t for t in tests if "under_probes" in t["nodeid"])
        total_s = test["metrics"]["total_time_ms"] / 1000
        verdict_s = test["phases_s"]["setup"] + test["phases_s"]["call"]
        rows.append({"verdict_s": verdict_s, "case_s": test["duration_s"], "total_s": total_s,
                     "ratio": verdict_s / total_s,
                     "start_s": test["run"].get("snapshot_restore_s", test["run"].get("boot_s", 0.0)),
                     "rss": test["run"].get("qemu_peak_rss_mib", 0.0)})
    return rows


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--full-suite", action="store_true")
    args = parser.parse_args()

    run_cases("-k", PROBE_CASE)  # builds the image and the snapshot if missing
    columns = {"cold boot": probe_case(args.runs, "--no-snapshots"),
               "restored": probe_case(args.runs),
               "restored, in a run": probe_case(args.runs, in_a_run=True)}
    print(f"probe case (ACPI), medians of {args.runs} runs each; 'in a run': after another case in the same pytest")
    print(f"{'':28}" + "".join(f"{name:>20}" for name in columns))
    for key, label in (("verdict_s", "start→verdict s"), ("case_s", "whole case (+teardown) s"),
                       ("start_s", "guest boot / restore s"), ("total_s", "QEMU total-time s"),
                       ("ratio", "start→verdict / total-time"), ("rss", "peak QEMU RSS MiB")):
        print(f"{label:28}" + "".join(f"{median(rows, key):20.2f}" for rows in columns.values()))
    for name in ("restored", "restored, in a run"):
        rows = columns[name]
        goal = 3 * median(rows, "total_s") + 2
        print(f"goal, {name}: start→verdict {median(rows, 'verdict_s'):.2f} s ≤ 3 × total-time + 2 s = {goal:.2f} s: "
              f"{'met' if median(rows, 'verdict_s') <= goal else 'NOT met'}")
    print()

    selections = [("non-timing cases", ("-m", "not timing"))]
    if args.full_suite:
        selections.append(("whole suite", ()))
    for name, selection in selections:
        serial, tests = run_cases(*selection, "-n", "1")
        parallel, _ = run_cases(*selection, "-n", "2")
        print(f"{name} ({len(tests)}): -n 1 {serial:.1f} s, -n 2 {parallel:.1f} s, "
              f"speed-up {serial / parallel:.2f}x (goal ≥ 1.6x for the non-timing cases)")
        print("  peak QEMU RSS per case (MiB): " + ", ".join(
            f"{t['nodeid'].split('::')[-1]} {t.get('run', {}).get('qemu_peak_rss_mib', '-')}" for t in tests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
