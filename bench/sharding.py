"""The suite in one shard against two, as CI runners would run it, and the merge of the two.

    .venv/bin/python bench/sharding.py [--reports DIR] [-- extra run args]

1. The whole suite once with ``--store-durations``: its wall time, and ``testcases/durations.json``
   written again from it (what ``make durations`` does; commit it if it changed).
2. ``--shard 1/2`` and ``--shard 2/2`` one after the other, each with the machine to itself as each of
   two runners would have: each shard's wall time; two runners would take the slower one's.
3. ``report --merge`` of the two: its time, and whether the merged run has the same cases and
   outcomes as the whole one.

Prints the figures; every run's reports stay under --reports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def harness(*args: str) -> tuple[float, int]:
    """Run ``failover-harness ARGS`` here; (wall seconds, exit status), its output passed through."""
    started = time.monotonic()
    code = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, check=False).returncode
    return time.monotonic() - started, code


def outcomes(directory: Path) -> dict[str, str]:
    results: dict[str, Any] = json.loads((directory / "results.json").read_text())
    return {t["nodeid"]: t["outcome"] for t in results["tests"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=Path, default=REPO / "reports" / "bench-sharding")
    parser.add_argument("run_args", nargs=argparse.REMAINDER, help="after --: more arguments for each run")
    args = parser.parse_args()
    extra = [a for a in args.run_args if a != "--"]
    whole_s, whole_code = harness("run", "--store-durations", "--reports", str(args.reports / "whole"), "--", *extra)
    shard_s = []
    for k in (1, 2):
        wall, _ = harness("run", "--shard", f"{k}/2", "--reports", str(args.reports / f"shard{k}"), "--", *extra)
        shard_s.append(wall)
    merge_s, merge_code = harness("report", "--merge", str(args.reports / "shard1"), str(args.reports / "shard2"),
                                  "--reports", str(args.reports / "merged"))
    whole, merged = outcomes(args.reports / "whole"), outcomes(args.reports / "merged") if merge_code == 0 else {}
    shards = [outcomes(args.reports / f"shard{k}") for k in (1, 2)]
    print(f"\none run:        {whole_s / 60:5.1f} min, {len(whole)} cases, exit {whole_code}")
    for k, (wall, cases) in enumerate(zip(shard_s, shards, strict=True), 1):
        print(f"shard {k} of 2:   {wall / 60:5.1f} min, {len(cases)} cases")
    print(f"two runners:    {max(shard_s) / 60:5.1f} min (the slower shard), {max(shard_s) / whole_s:.0%} of one run")
    print(f"merge:          {merge_s:5.1f} s, exit {merge_code}")
    differ = sorted(n for n in whole.keys() | merged.keys() if whole.get(n) != merged.get(n))
    print("merged = one run: " + ("yes, same cases and outcomes" if not differ else f"no: {differ}"))
    return 0 if merge_code == 0 and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
