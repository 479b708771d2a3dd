"""``failover-harness trend``: each case's headline metrics over many runs (nightly CI's results.json).

A run's value is flagged when it lies outside the spread of the runs before it: with at
least :data:`MIN_HISTORY` earlier runs, over the last :data:`WINDOW` of them, outside their
median plus or minus the larger of :data:`MAD_FACTOR` scaled median absolute deviations
(a robust standard deviation: one bad night does not widen it) and the comparison's practical
minimum (10 % of the median, 10 ms, 5 probes, 5 Mbit/s). Beyond on the worse side is
``worse``, on the better side ``better``.
"""

from __future__ import annotations

import fnmatch
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from harness.compare.judgement import Direction, PracticalRule
from harness.compare.samples import case_records, metric_kind
from harness.errors import ConfigError
from harness.templating import render

HEADLINE = ("downtime_ms", "total_time_ms", "switch_to_standby_ms", "failback_ms", "max_gap_ms", "probes_lost",
            "throughput_after_resume_mbps")
MIN_HISTORY = 5
WINDOW = 20
MAD_FACTOR = 4.0
MAD_TO_SIGMA = 1.4826  # a normal distribution's standard deviation per median absolute deviation
Flag = Literal["worse", "better"]


@dataclass(frozen=True)
class Run:
    source: Path
    started: float
    exit_status: int
    values: dict[tuple[str, str], float]  # (case, metric) -> value


@dataclass(frozen=True)
class Point:
    run: Run
    value: float
    band: tuple[float, float] | None  # the spread of the runs before it (None: too few)
    flag: Flag | None


@dataclass(frozen=True)
class Series:
    case: str
    metric: str
    unit: str
    better: Direction
    points: list[Point]


def find_results(paths: Sequence[Path]) -> list[Path]:
    """Every results.json under *paths* (a file is taken as is, a directory searched)."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob("results.json"))
        else:
            raise ConfigError(f"trend: {path} does not exist (give directories of runs, or results.json files)")
    if not found:
        raise ConfigError(f"trend: no results.json under {', '.join(map(str, paths))}")
    return found


def load_run(path: Path, wanted: Sequence[str]) -> Run:
    """One run's values of the metrics matching *wanted* (glob patterns)."""
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        started = float(doc["started"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"trend: {path}: not a results.json of failover-harness ({type(e).__name__}: {e})") from None
    values = {(case, name): value for case, record in case_records(doc).items()
              for name, value in record.metrics.items() if any(fnmatch.fnmatchcase(name, w) for w in wanted)}
    return Run(path, started, int(doc.get("exit_status", -1)), values)


def spread(history: Sequence[float], unit: str, rule: PracticalRule) -> tuple[float, float]:
    """The band a new value is expected in, from the values before it (see the module's rule)."""
    median = statistics.median(history)
    mad = statistics.median(abs(v - median) for v in history)
    half = max(MAD_FACTOR * MAD_TO_SIGMA * mad, rule.threshold(unit, median))
    return median - half, median + half


def build_series(runs: Sequence[Run], rule: PracticalRule) -> list[Series]:
    """Per (case, metric), its points in time order, each judged against the runs before it."""
    ordered = sorted(runs, key=lambda r: r.started)
    keys = sorted({key for run in ordered for key in run.values})
    series = []
    for case, metric in keys:
        kind = metric_kind(metric)
        if kind is None:
            continue
        unit, better = kind
        points: list[Point] = []
        for run in ordered:
            if (value := run.values.get((case, metric))) is None:
                continue
            history = [p.value for p in points][-WINDOW:]
            band = spread(history, unit, rule) if len(history) >= MIN_HISTORY else None
            flag: Flag | None = None
            if band is not None and not band[0] <= value <= band[1]:
                flag = "worse" if (value > band[1]) == (better == "lower") else "better"
            points.append(Point(run, value, band, flag))
        series.append(Series(case, metric, unit, better, points))
    return series


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def flagged_lines(series: Sequence[Series]) -> list[str]:
    return [f"{p.flag:<6} {_when(p.run.started)}  {s.case.rsplit('::', 1)[-1]}  {s.metric} {p.value:.4g} {s.unit} "
            f"(earlier runs' band {p.band[0]:.4g} to {p.band[1]:.4g}; {p.run.source})"
            for s in series for p in s.points if p.flag and p.band]


def latest_worse(series: Sequence[Series], runs: Sequence[Run]) -> list[Series]:
    """The series whose newest run's value is flagged worse: what a nightly job fails on."""
    newest = max(runs, key=lambda r: r.started)
    return [s for s in series if s.points and s.points[-1].run is newest and s.points[-1].flag == "worse"]


# Each chart's size in the page, in px.
CHART_WIDTH, CHART_HEIGHT, CHART_MARGIN = 640, 150, 30


def chart(s: Series) -> dict[str, Any]:
    """Coordinates of one series' SVG chart: a line through the runs, the band behind each, flags marked."""
    values = [p.value for p in s.points] + [b for p in s.points if p.band for b in p.band]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    n = len(s.points)

    def x(i: int) -> float:
        return round(CHART_MARGIN + (i / (n - 1) if n > 1 else 0.5) * (CHART_WIDTH - 2 * CHART_MARGIN), 1)

    def y(v: float) -> float:
        return round(CHART_HEIGHT - CHART_MARGIN / 2 - (v - low) / span * (CHART_HEIGHT - CHART_MARGIN), 1)

    return {
        "line": " ".join(f"{x(i)},{y(p.value)}" for i, p in enumerate(s.points)),
        "dots": [{"x": x(i), "y": y(p.value), "flag": p.flag or "", "title": f"{_when(p.run.started)}: {p.value:.4g}"}
                 for i, p in enumerate(s.points)],
        "bands": [{"x": x(i) - 3, "y": y(p.band[1]), "height": round(y(p.band[0]) - y(p.band[1]), 1)}
                  for i, p in enumerate(s.points) if p.band],
        "low": low, "high": high,
    }


def render_html(series: Sequence[Series], runs: Sequence[Run]) -> str:
    return render("trend.html.j2", runs=len(runs), first=_when(min(r.started for r in runs)),
                  last=_when(max(r.started for r in runs)), flagged=flagged_lines(series),
                  charts=[{"case": s.case.rsplit("::", 1)[-1], "metric": s.metric, "unit": s.unit, "better": s.better,
                           "plot": chart(s)} for s in series if s.points],
                  size={"width": CHART_WIDTH, "height": CHART_HEIGHT},
                  rule={"min_history": MIN_HISTORY, "window": WINDOW, "mad_factor": MAD_FACTOR})
