"""A comparison as people and tools read it: compare.json, a self-contained compare.html, a terminal table.

Order everywhere: checks whose verdict changed between the sides first, then metrics that
regressed, improved, and the rest.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.compare import CaseMetric, Comparison
from harness.compare.samples import SIDES, CheckTally
from harness.templating import render

_VERDICT_ORDER = {"regressed": 0, "improved": 1, "unchanged": 2, "unknown": 3}
# The strip plots' size in the page, in px.
PLOT_WIDTH, PLOT_HEIGHT, PLOT_MARGIN = 260, 34, 6


def ordered_metrics(comparison: Comparison) -> list[CaseMetric]:
    return sorted(comparison.metrics, key=lambda m: (_VERDICT_ORDER[m.comparison.verdict], m.case, m.comparison.name))


def _short(case: str) -> str:
    return case.rsplit("::", 1)[-1]


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _difference(m: CaseMetric) -> str:
    c = m.comparison
    if c.difference is None or c.interval is None:
        return "—"
    relative = f" ({c.relative:+.0%})" if c.relative is not None else ""
    return f"{c.difference:+.4g}{relative} [{c.interval[0]:+.4g}, {c.interval[1]:+.4g}]"


def _check_line(tally: CheckTally) -> str:
    sides = ", ".join(f"{side} passed {tally.passed[side]} of {tally.runs[side]}" for side in SIDES)
    return f"{tally.change}: {_short(tally.case)} {tally.check} ({sides})"


def terminal_table(comparison: Comparison) -> list[str]:
    """Check changes, then every judged metric with its verdict, medians, difference and interval."""
    s = comparison.settings
    lines = [f"baseline:  {s.baseline.describe()}", f"candidate: {s.candidate.describe()}",
             f"{s.runs} run(s) per side, interleaved; cases: -k {s.select!r}", ""]
    lines += [_check_line(t) for t in comparison.changed_checks]
    lines.append(f"{'verdict':<10} {'case':<44} {'metric':<36} {'baseline':>10} {'candidate':>10}  "
                 f"difference [{s.rule.confidence:.0%} interval]   p(Holm)")
    for m in ordered_metrics(comparison):
        c = m.comparison
        p = _number(c.p_adjusted, 2)
        lines.append(f"{c.verdict:<10} {_short(m.case)[:44]:<44} {c.name[:36]:<36} {_number(c.baseline_median):>10} "
                     f"{_number(c.candidate_median):>10}  {_difference(m)}   {p}")
    regressed, broke = len(comparison.regressed), len(comparison.broken_checks)
    lines.append(f"\n{regressed} metric(s) regressed, {len(comparison.improved)} improved, "
                 f"{broke} check(s) broke: {'REGRESSED' if comparison.exit_status else 'no regression'}")
    return lines


@dataclass(frozen=True)
class StripPlot:
    """Where the dots of both sides go in a small SVG (the template draws it)."""

    dots: list[tuple[float, float, str]]  # x, y, side
    medians: list[tuple[float, float, str]]  # x, y, side
    low: float
    high: float


def strip_plot(baseline: tuple[float, ...], candidate: tuple[float, ...]) -> StripPlot:
    """Both sides on one scale: baseline's dots on the upper row, candidate's on the lower, each
    median as a tick."""
    values = baseline + candidate
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    span = (high - low) or 1.0
    rows = {"baseline": PLOT_HEIGHT * 0.3, "candidate": PLOT_HEIGHT * 0.75}

    def x(value: float) -> float:
        return round(PLOT_MARGIN + (value - low) / span * (PLOT_WIDTH - 2 * PLOT_MARGIN), 1)

    dots, medians = [], []
    for side, sample in (("baseline", baseline), ("candidate", candidate)):
        dots += [(x(v), rows[side], side) for v in sample]
        if sample:
            medians.append((x(statistics.median(sample)), rows[side], side))
    return StripPlot(dots, medians, low, high)


def render_html(comparison: Comparison) -> str:
    s = comparison.settings
    rows = [{"case": _short(m.case), "metric": m.comparison, "difference": _difference(m),
             "baseline_median": _number(m.comparison.baseline_median),
             "candidate_median": _number(m.comparison.candidate_median),
             "p": _number(m.comparison.p_adjusted, 2),
             "plot": strip_plot(m.comparison.baseline, m.comparison.candidate)}
            for m in ordered_metrics(comparison)]
    return render("compare.html.j2", settings=s, started=comparison.started, runs=comparison.runs, rows=rows,
                  changed_checks=[_check_line(t) for t in comparison.changed_checks],
                  verdict="REGRESSED" if comparison.exit_status else "no regression",
                  counts={"regressed": len(comparison.regressed), "improved": len(comparison.improved),
                          "broke": len(comparison.broken_checks)},
                  plot={"width": PLOT_WIDTH, "height": PLOT_HEIGHT})


def as_json(comparison: Comparison) -> dict[str, Any]:
    """Every sample and every statistic, with the settings and runs that produced them."""
    s = comparison.settings
    return {
        "schema": "failover-harness-compare/1",
        "started": comparison.started,
        "settings": {"baseline": asdict(s.baseline), "candidate": asdict(s.candidate), "runs_per_side": s.runs,
                     "select": s.select, "metrics": list(s.metrics), "profile": s.profile,
                     "pytest_args": list(s.pytest_args), "rule": asdict(s.rule)},
        "exit_status": comparison.exit_status,
        "runs": [asdict(r) for r in comparison.runs],
        "checks": [{**asdict(t), "change": t.change} for t in comparison.checks],
        "metrics": [{"case": m.case, **asdict(m.comparison), "relative": m.comparison.relative}
                    for m in ordered_metrics(comparison)],
    }


def write_reports(comparison: Comparison, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "compare.json", directory / "compare.html"
    json_path.write_text(json.dumps(as_json(comparison), indent=1, default=str) + "\n")
    html_path.write_text(render_html(comparison))
    return json_path, html_path
