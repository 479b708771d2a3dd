"""The soak command's table, from the soak case's results."""

from __future__ import annotations

from harness.cli import soak_table

TIMED_OUT = {"tests": [{"nodeid": "soak/test_soak.py::test_soak", "outcome": "failed", "metrics": {},
                        "message": "soak/test_soak.py:48: \n    run = measure_migration(...)\n"
                                   "E                   Failed: Timeout (>900.0s) from pytest-timeout.\n"}]}


def test_a_soak_that_ended_before_its_distributions_says_so_and_why() -> None:
    assert soak_table(TIMED_OUT) == ["no distributions: the soak case failed before it recorded them "
                                     "(Failed: Timeout (>900.0s) from pytest-timeout.)"]


def test_each_metric_gets_its_distribution_and_the_summary_line() -> None:
    metrics: dict[str, float] = {"migrations": 2, "harness_errors": 0}
    metrics |= {f"max_gap_ms.{stat}": value for stat, value in
                (("min", 1.0), ("median", 2.0), ("p95", 3.0), ("p99", 3.5), ("max", 4.0))}
    lines = soak_table({"tests": [{"outcome": "passed", "metrics": metrics}]})
    assert lines[1].split() == ["max_gap_ms", "1.0", "2.0", "3.0", "3.5", "4.0"]
    assert lines[-1] == "migrations: 2, harness errors: 0, verdict: passed"
