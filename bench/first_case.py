"""Figures for the probe migration case on this machine: run it as a user would, N times, and summarise.

    .venv/bin/python bench/first_case.py [--runs 3] [-- extra pytest args]

For each run: wall time from starting pytest to its verdict, guest boot time
(QEMU launch to agent ready), QEMU's migration total-time and downtime, the
wait-unplug time, probes lost and the longest gap. Prints a table and the
median of each column; timing belongs here, never in test assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from suite_run import run_cases  # bench/ is on sys.path when a script runs

COLUMNS = (
    ("wall_s", "pytest start→verdict s"),
    ("boot_s", "guest boot s"),
    ("total_time_ms", "migration total ms"),
    ("downtime_ms", "QEMU downtime ms"),
    ("unplug_wait_ms", "wait-unplug ms"),
    ("probes_sent", "probes sent"),
    ("switch_to_standby_ms", "switch to standby ms"),
    ("failback_ms", "fail-back ms"),
    ("probes_lost", "probes lost"),
    ("max_gap_ms", "longest gap ms"),
)


def one_run(extra: list[str]) -> dict[str, float]:
    # ACPI only (the native-hotplug variant waits ~5 s for pciehp); cold boots, the figures include one.
    wall, (test,) = run_cases("-k", "under_probes and acpi", "--no-snapshots", *extra)
    row = {"wall_s": wall, "boot_s": float(test["run"]["boot_s"])}
    row.update({k: float(v) for k, v in test["metrics"].items() if isinstance(v, int | float)})
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    rows = []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs} ...", file=sys.stderr, flush=True)
        rows.append(one_run(args.pytest_args))
    print(" | ".join(f"{title:>22}" for _, title in COLUMNS))
    for row in rows:
        print(" | ".join(f"{row.get(key, float('nan')):>22.1f}" for key, _ in COLUMNS))
    print(" | ".join(f"{statistics.median(r.get(k, float('nan')) for r in rows):>22.1f}" for k, _ in COLUMNS)
          + "   (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
