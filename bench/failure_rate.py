"""How often the harness's own tests fail when run again and again: a failure rate per test.

Runs ``pytest tests PYTEST-ARGS`` RUNS times, each with a JUnit file of its own, then prints
per test how many runs it passed, failed (an error counts as a failure), and needed the flake
policy's one retry (``run.retried``, with its cause: an L1's kernel panic, a guest that fell
silent). The figures docs/benchmarks.md gives for the nested and lab tests come from here::

    .venv/bin/python bench/failure_rate.py --runs 3 -- -m whole_host -k "nested or lab"

A figure, not a verdict: the exit status is 0 whatever failed (1 only if a run collected nothing).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RETRIED = "run.retried"
NO_TESTS = 5  # pytest's exit status when it collected nothing


@dataclass
class Tally:
    """One test's outcomes over the runs."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    retried: list[str] = field(default_factory=list)  # the causes of its retries


def tally_junit(path: Path, tallies: dict[str, Tally]) -> None:
    """Add the outcomes of one JUnit file (xunit1, as the harness writes it) to *tallies*. Pure."""
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        tally = tallies[name]
        if case.find("failure") is not None or case.find("error") is not None:
            tally.failed += 1
        elif case.find("skipped") is not None:
            tally.skipped += 1
        else:
            tally.passed += 1
        retried = [p.get("value", "") for p in case.iter("property") if p.get("name") == RETRIED]
        tally.retried += [cause for cause in retried if cause.startswith("once")]


def render(tallies: dict[str, Tally], runs: int) -> str:
    lines = [f"{'test':<90} {'passed':>6} {'failed':>6} {'skipped':>7} {'retried':>7}"]
    for name, t in sorted(tallies.items()):
        lines.append(f"{name[-90:]:<90} {t.passed:>6} {t.failed:>6} {t.skipped:>7} {len(t.retried):>7}")
        lines += [f"    retried {cause}" for cause in t.retried]
    failed_runs = sum(t.failed for t in tallies.values())
    executed = sum(t.passed + t.failed for t in tallies.values())
    retried = sum(len(t.retried) for t in tallies.values())
    lines.append(f"{runs} runs, {executed} test executions: {failed_runs} failed "
                 f"({100 * failed_runs / max(executed, 1):.1f} %), {retried} passed or failed only after a retry "
                 f"({100 * retried / max(executed, 1):.1f} %)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/failure_rate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--junit-dir", type=Path, default=REPO / "reports" / "failure-rate")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.junit_dir.mkdir(parents=True, exist_ok=True)
    tallies: dict[str, Tally] = defaultdict(Tally)
    pytest_args = [a for a in args.pytest_args if a != "--"]
    for run in range(1, args.runs + 1):
        junit = args.junit_dir / f"run{run}.xml"
        started = time.monotonic()
        status = subprocess.call([sys.executable, "-m", "pytest", "tests", "-q", f"--junitxml={junit}",
                                  *pytest_args], cwd=REPO)
        print(f"failure_rate: run {run}/{args.runs}: pytest exit status {status} in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        if status == NO_TESTS:
            print("failure_rate: pytest collected no test: check the arguments", file=sys.stderr)
            return 1
        if not junit.exists():  # pytest itself failed (a usage error, an internal error)
            print(f"failure_rate: run {run} wrote no JUnit file: not counted", file=sys.stderr)
            continue
        tally_junit(junit, tallies)
    print(render(tallies, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
