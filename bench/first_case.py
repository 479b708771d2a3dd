"""Figures for the probe migration case on this machine: run it as a user would, N times, and summarise.

    .venv/bin/python bench/first_case.py [--runs 3] [-- extra pytest args]

For each run: wall time from starting pytest to its verdict, guest boot time
(QEMU launch to agent ready), QEMU's migration total-time and downtime, the
wait-unplug time, probes lost and the longest gap. Prints a table and the
median of each column; timing belongs here, never in test assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        results = Path(tmp) / "results.json"
        argv = [sys.executable, "-m", "pytest", str(REPO / "testcases"), "-q", "-p", "no:cacheprovider",
                "-k", "under_probes", "--no-snapshots",  # the figures include a cold guest boot
                "--results-json", str(results), "--artifacts-dir", str(Path(tmp) / "artifacts"),
                *extra]
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:])
            raise SystemExit(f"conformance run failed with {proc.returncode}")
        (test,) = json.loads(results.read_text())["tests"]
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
