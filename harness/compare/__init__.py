"""``failover-harness compare``: did a patch to QEMU or to the guest kernel change failover?

The same cases run N times on each side, interleaved on this host (:mod:`.runner`); each
run's results give per case the judged metrics and the checks' verdicts (:mod:`.samples`);
each metric is judged with a rank test, a bootstrap interval and a practical minimum, Holm-
corrected over all the metrics (:mod:`.judgement`); the result is written as compare.json,
a self-contained compare.html and a terminal table (:mod:`.report`).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from harness.compare.judgement import MetricComparison, compare_metric, judge
from harness.compare.runner import CompareSettings, RunCase, RunRecord, run_all, run_with_pytest
from harness.compare.samples import (
    CaseRecord,
    CheckTally,
    Side,
    case_records,
    metric_kind,
    metric_samples,
    tally_checks,
)

__all__ = ["CaseMetric", "Comparison", "compare", "judge_runs"]


@dataclass(frozen=True)
class CaseMetric:
    case: str
    comparison: MetricComparison


@dataclass(frozen=True)
class Comparison:
    settings: CompareSettings
    started: str
    runs: list[RunRecord]
    metrics: list[CaseMetric]
    checks: list[CheckTally]

    @property
    def regressed(self) -> list[CaseMetric]:
        return [m for m in self.metrics if m.comparison.verdict == "regressed"]

    @property
    def improved(self) -> list[CaseMetric]:
        return [m for m in self.metrics if m.comparison.verdict == "improved"]

    @property
    def broken_checks(self) -> list[CheckTally]:
        return [c for c in self.checks if c.change == "broke"]

    @property
    def changed_checks(self) -> list[CheckTally]:
        return [c for c in self.checks if c.change is not None]

    @property
    def exit_status(self) -> int:
        """1 when a metric regressed or a check broke, else 0."""
        return 1 if self.regressed or self.broken_checks else 0


def _wanted(name: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def judge_runs(settings: CompareSettings, runs: list[tuple[Side, dict[str, CaseRecord]]]) -> tuple[
        list[CaseMetric], list[CheckTally]]:
    """The judged metrics (Holm over all of them together) and the check tallies of *runs*."""
    keyed = []
    for (case, name), sides in metric_samples(runs).items():
        kind = metric_kind(name)
        if kind is None or not _wanted(name, settings.metrics):
            continue
        unit, better = kind
        keyed.append((case, compare_metric(name, unit, better, sides["baseline"], sides["candidate"], settings.rule)))
    judged = judge([c for _, c in keyed], settings.rule)
    return [CaseMetric(case, c) for (case, _), c in zip(keyed, judged, strict=True)], tally_checks(runs)


def compare(settings: CompareSettings, run_case: RunCase = run_with_pytest) -> Comparison:
    """Run both sides (:func:`.runner.run_all`) and judge what they measured."""
    settings.validate()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    records = run_all(settings, run_case)
    runs = [(r.side, case_records(json.loads((r.directory / "results.json").read_text()))) for r in records]
    metrics, checks = judge_runs(settings, runs)
    return Comparison(settings, started, records, metrics, checks)
