"""What a comparison compares: each case's judged metrics and check verdicts, read from the
``results.json`` of every run of each side.

Only metrics with a direction are judged (times, losses and counts of trouble: lower is
better; throughput: higher is better). Counts that depend on the window the harness chose
(probes sent, replies per path, the baseline's length) describe a run, not its quality.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from harness.compare.judgement import Direction

Side = Literal["baseline", "candidate"]
SIDES: tuple[Side, Side] = ("baseline", "candidate")

# Metrics in ms that are not better when lower: how long before the end of the unplug the guest
# released its primary is a margin.
_MS_NOT_JUDGED = frozenset({"release_before_unplug_end_ms"})
_COUNTS_OF_TROUBLE = {"probes_lost": "probes", "duplicates": "probes", "reordered": "probes",
                      "outage_count": "outages"}
_PHASE_LOSSES = frozenset({"probes_lost", "lost_inbound", "lost_outbound"})
# Phases whose length the harness's window sets, not the migration.
_WINDOW_PHASES = frozenset({"baseline", "after_restore"})


def metric_kind(name: str) -> tuple[str, Direction] | None:
    """The unit and better direction of a metric as the comparison names it, or None: not judged.

    Phase metrics are named ``phase.<phase>.<figure>`` (results.json's ``migration_phases``)."""
    if name.startswith("phase."):
        _, phase, figure = name.split(".", 2)
        if figure == "max_gap_ms" or (figure == "ms" and phase not in _WINDOW_PHASES):
            return "ms", "lower"
        return ("probes", "lower") if figure in _PHASE_LOSSES else None
    if name.endswith("_mbps"):
        return "Mbit/s", "higher"
    if name.endswith("_ms") and name not in _MS_NOT_JUDGED:
        return "ms", "lower"
    unit = _COUNTS_OF_TROUBLE.get(name)
    return (unit, "lower") if unit else None


@dataclass(frozen=True)
class CaseRecord:
    """One case in one run: its outcome, judged metrics and checks (name -> passed)."""

    outcome: str
    metrics: Mapping[str, float]
    checks: Mapping[str, bool]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def case_records(results: Mapping[str, Any]) -> dict[str, CaseRecord]:
    """Every case of one run's results.json, by node id."""
    records = {}
    for test in results.get("tests", []):
        named = {**test.get("metrics", {}),
                 **{f"phase.{key}": value for key, value in test.get("migration_phases", {}).items()}}
        metrics = {name: number for name, value in named.items()
                   if metric_kind(name) is not None and (number := _number(value)) is not None}
        checks = {name: str(verdict).startswith("PASS") for name, verdict in test.get("checks", {}).items()}
        records[test["nodeid"]] = CaseRecord(test["outcome"], metrics, checks)
    return records


@dataclass(frozen=True)
class CheckTally:
    """How often one check (or a case's outcome, as check ``outcome``) passed on each side."""

    case: str
    check: str
    passed: Mapping[Side, int]
    runs: Mapping[Side, int]

    def majority_passed(self, side: Side) -> bool:
        return self.passed[side] * 2 > self.runs[side]

    @property
    def change(self) -> Literal["broke", "fixed"] | None:
        """A check that passes in most baseline runs and fails in most candidate runs broke (the
        reverse: fixed). A majority rather than every run: one failure in ten on a noisy shared
        host is noise, not a verdict that changed."""
        if not self.runs["baseline"] or not self.runs["candidate"]:
            return None
        base, cand = self.majority_passed("baseline"), self.majority_passed("candidate")
        return None if base == cand else ("broke" if base else "fixed")


def tally_checks(runs: SideRuns) -> list[CheckTally]:
    """Per case and check, the passes and runs of each side; a case's outcome counts as check
    ``outcome`` (passed, or xfailed as expected)."""
    passed: dict[tuple[str, str], dict[Side, int]] = {}
    seen: dict[tuple[str, str], dict[Side, int]] = {}
    for side, records in runs:
        for case, record in records.items():
            verdicts = {"outcome": record.outcome in ("passed", "xfailed"), **record.checks}
            for check, ok in verdicts.items():
                key = (case, check)
                seen.setdefault(key, dict.fromkeys(SIDES, 0))[side] += 1
                passed.setdefault(key, dict.fromkeys(SIDES, 0))[side] += ok
    return [CheckTally(case, check, passed[(case, check)], seen[(case, check)]) for case, check in sorted(seen)]


# Per (case, metric), each side's values.
Samples = dict[tuple[str, str], dict[Side, list[float]]]
# Each run's side and cases.
SideRuns = Iterable[tuple[Side, Mapping[str, CaseRecord]]]


def metric_samples(runs: SideRuns) -> Samples:
    """Per (case, metric), each side's values in run order (a run that did not measure it adds none)."""
    samples: Samples = {}
    for side, records in runs:
        for case, record in records.items():
            for name, value in record.metrics.items():
                samples.setdefault((case, name), {s: [] for s in SIDES})[side].append(value)
    return dict(sorted(samples.items()))
