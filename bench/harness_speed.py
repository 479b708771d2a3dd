"""How fast the harness itself is, all figures from one run of this script (the machine is shared and noisy).

    .venv/bin/python bench/harness_speed.py [--runs 3] [--full-suite]

1. The probe case (ACPI), cold-boot source (--no-snapshots) against restored
   source: test start→verdict (setup+call+teardown of the case) and the ratio
   to QEMU's own migration total-time; the goal is restored ≤ 3 × total-time + 2 s.
2. The suite's non-timing cases with -n 1 and -n 2 (goal: -n 2 at least 1.6× faster);
   with --full-suite, the whole suite too (timing cases run alone under either).
3. Peak QEMU memory per case (VmHWM of the case's largest QEMU) from those runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from suite_run import run_cases  # bench/ is on sys.path when a script runs

PROBE_CASE = ("-k", "under_probes and acpi")


def probe_case(runs: int, *args: str) -> list[dict[str, float]]:
    rows = []
    for _ in range(runs):
        _, (test,) = run_cases(*PROBE_CASE, *args)
        total_s = test["metrics"]["total_time_ms"] / 1000
        rows.append({"case_s": test["duration_s"], "total_s": total_s, "ratio": test["duration_s"] / total_s,
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

    run_cases(*PROBE_CASE)  # warm-up: builds the image and the snapshot if missing
    cold = probe_case(args.runs, "--no-snapshots")
    restored = probe_case(args.runs)
    print(f"probe case (ACPI), medians of {args.runs} runs each")
    print(f"{'':28}{'cold boot':>12}{'restored':>12}")
    for key, label in (("case_s", "case start→verdict s"), ("start_s", "guest boot / restore s"),
                       ("total_s", "QEMU total-time s"), ("ratio", "case / total-time"),
                       ("rss", "peak QEMU RSS MiB")):
        print(f"{label:28}{median(cold, key):12.2f}{median(restored, key):12.2f}")
    goal = 3 * median(restored, "total_s") + 2
    print(f"goal restored ≤ 3 × total-time + 2 s = {goal:.2f} s: "
          f"{'met' if median(restored, 'case_s') <= goal else 'NOT met'}\n")

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
