"""Reports: JUnit properties, HTML extras and ``results.json``, all from the same numbers.

Tests record ``metric.<name>``, ``phase.<phase>.<name>`` and ``check.<name>`` user properties (JUnit
xunit1 ``<properties>``). The HTML report shows them as a table per test, and
:class:`ResultsJson` (controller side, so it works under xdist) writes every
test's outcome, metrics and checks to ``results.json`` for trend tooling.
"""

from __future__ import annotations

import gzip
import json
import platform
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.metrics import MigrationMetrics
from harness.phases import PHASE_NAMES, PhaseStats
from harness.templating import render
from harness.timeline import Timeline

# 2: raw timelines moved out of results.json into linked files (data_files).
RESULTS_SCHEMA = 2
# User properties with this prefix carry bulk data (timelines) for results.json
# only: ResultsJson removes them from the report before JUnit and HTML see it.
DATA_PREFIX = "data."
# Data whose name starts so is a raw timeline (record_timeline), kept in a file of its own.
TIMELINE_DATA = "timeline"


def safe_name(nodeid: str) -> str:
    """A test's node id as a file name (its artifacts directory, its timeline files)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:120]


def failure_lines(message: str) -> list[str]:
    """The ``E`` lines of a test entry's pytest ``message``: what was raised, without the traceback."""
    return [line.removeprefix("E").strip() for line in message.splitlines() if line.startswith("E ")]


def load_test_data(results_path: Path, entry: dict[str, Any], name: str) -> Any:
    """The data *name* (e.g. ``timeline``) of one results.json test entry, inline or from its linked file."""
    if name in entry.get("data", {}):
        return entry["data"][name]
    with gzip.open(results_path.parent / entry["data_files"][name], "rt") as f:
        return json.load(f)


def summary_counts(tests: Iterable[dict[str, Any]]) -> dict[str, int]:
    """results.json's ``summary``: cases per outcome, and ``flaky`` for those retried once. Pure."""
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        if t.get("reruns"):
            counts["flaky"] = counts.get("flaky", 0) + 1
    return counts


def record_metrics(record: Callable[[str, object], None], metrics: MigrationMetrics, prefix: str = "") -> None:
    """Record every scalar metric as a JUnit property ``metric.[prefix]<name>`` (builtins only, for xdist)."""
    for name, value in metrics.scalars().items():
        record(f"metric.{prefix}{name}", round(value, 3) if isinstance(value, float) else value)


def record_phases(record: Callable[[str, object], None], stats: Sequence[PhaseStats], prefix: str = "") -> None:
    """Record what each phase of a migration saw as ``phase.[prefix]<phase>.<name>``."""
    for phase in stats:
        for name, value in phase.scalars().items():
            record(f"phase.{prefix}{phase.phase.name}.{name}", round(value, 3) if isinstance(value, float) else value)


def record_timeline(record: Callable[[str, object], None], timeline: Timeline, name: str = "timeline") -> None:
    """Attach the whole timeline for ``results.json`` (a ``data.`` property: kept out of JUnit and HTML)."""
    record(f"{DATA_PREFIX}{name}", json.dumps(timeline.to_dict(), separators=(",", ":")))


def properties_table(properties: list[tuple[str, object]]) -> str:
    """An HTML table of the metric and check properties of one test ("" when it has none)."""
    rows = [(name, str(value)) for name, value in properties
            if name.startswith(("metric.", "phase.", "check.", "run."))]
    return render("properties_table.html.j2", rows=rows) if rows else ""


def _migrations(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The migrations one results.json test entry measured, by metric prefix ("" or "hop1." ...):
    its phases' values, by ``<phase>.<name>``."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in entry.get("migration_phases", {}).items():
        head, phase, name = key.rsplit(".", 2) if key.count(".") >= 2 else ("", *key.split("."))
        found.setdefault(f"{head}." if head else "", {})[f"{phase}.{name}"] = value
    return found


def _ms_cell(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, int | float) else "-"


@dataclass(frozen=True)
class _MigrationRow:
    """One migration in the summary; *cells* are QEMU's downtime, the switch and fail-back, then per phase
    "<longest gap> / <probes lost>"."""

    case: str
    outcome: str
    cells: tuple[str, ...]


def migration_summary_html(tests: list[dict[str, Any]]) -> str:
    """A table of every migration the run measured, one row each: its case's verdict, QEMU's
    downtime, the switch and fail-back, and per phase the longest time without a reply and the
    probes lost (docs/checks-and-metrics.md, "Reading a report"). "" when nothing migrated. Pure."""
    rows = []
    for entry in tests:
        for prefix, phases in _migrations(entry).items():
            metrics = entry.get("metrics", {})
            rows.append(_MigrationRow(
                case=entry["nodeid"].split("::")[-1] + (f" ({prefix.rstrip('.')})" if prefix else ""),
                outcome=entry.get("outcome", ""),
                cells=(*(_ms_cell(metrics.get(f"{prefix}{m}")) for m in ("downtime_ms", "switch_to_standby_ms",
                                                                        "failback_ms")),
                       *(f"{_ms_cell(phases.get(f'{p}.max_gap_ms'))} / {phases.get(f'{p}.probes_lost', '-')}"
                         for p in PHASE_NAMES))))
    return render("migration_summary.html.j2", rows=rows, phase_names=PHASE_NAMES) if rows else ""


class ResultsJson:
    """Collects test reports on the controller and writes ``results.json`` at the end of the session.

    Registered even without a path: it also keeps bulk ``data.`` properties out of JUnit.
    """

    def __init__(self, path: Path | None, run_info: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.run_info = run_info
        self.tests: dict[str, dict[str, Any]] = {}
        self.started = time.time()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed",
                                                      "duration_s": 0.0, "metrics": {}, "checks": {}})
        entry["duration_s"] = round(entry["duration_s"] + report.duration, 3)
        # Wall-clock times (epoch s): which cases overlapped, in a run with xdist workers.
        entry.setdefault("started", round(report.start, 3))
        entry["finished"] = round(report.stop, 3)
        entry.setdefault("phases_s", {})[report.when] = round(report.duration, 3)  # setup + call: start → verdict
        outcome: str = report.outcome  # pytest's type does not know harness.plugin.rerun's "rerun"
        if outcome == "rerun":  # harness.plugin.rerun: an environmental failure, retried once
            entry["reruns"] = entry.get("reruns", 0) + 1
            entry["rerun_message"] = str(report.longrepr)[-4000:]
            return
        if report.failed:
            entry["outcome"] = "error" if report.when != "call" else "failed"
            entry["message"] = str(report.longrepr)[-4000:]
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            if hasattr(report, "wasxfail"):  # why the failure is expected (a known QEMU bug and its version)
                entry["message"] = report.wasxfail
            elif isinstance(report.longrepr, tuple):
                entry["message"] = report.longrepr[2]
        data = [(n, v) for n, v in report.user_properties if n.startswith(DATA_PREFIX)]
        report.user_properties = [(n, v) for n, v in report.user_properties if not n.startswith(DATA_PREFIX)]
        # Every phase's report carries the properties recorded so far; take the (large) data
        # once, from the last phase, and only when it will be written.
        if self.path is not None and report.when == "teardown":
            for name, value in data:
                self._keep_data(entry, name.removeprefix(DATA_PREFIX), str(value))
        for name, value in report.user_properties:
            if name.startswith("metric."):
                entry["metrics"][name.removeprefix("metric.")] = value
            elif name.startswith("phase."):
                entry.setdefault("migration_phases", {})[name.removeprefix("phase.")] = value
            elif name.startswith("check."):
                entry["checks"][name.removeprefix("check.")] = value
            elif name.startswith("run."):
                entry.setdefault("run", {})[name.removeprefix("run.")] = value

    @property
    def timelines_dir(self) -> Path:
        """Where each test's raw timelines go, compressed, beside results.json (``results-timelines/``)."""
        assert self.path is not None
        return self.path.parent / f"{self.path.stem}-timelines"

    def _keep_data(self, entry: dict[str, Any], name: str, value: str) -> None:
        """A raw timeline (1 kHz probes: megabytes) goes to a compressed file of its own, linked
        from the entry's ``data_files``, so that results.json stays small enough to archive for
        hundreds of nightly runs; other data (a soak's samples) stays inline under ``data``."""
        if not name.startswith(TIMELINE_DATA):
            entry.setdefault("data", {})[name] = json.loads(value)
            return
        relative = Path(self.timelines_dir.name) / f"{safe_name(entry['nodeid'])}.{name}.json.gz"
        target = self.path.parent / relative if self.path is not None else relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(target, "wt") as f:
            f.write(value)
        entry.setdefault("data_files", {})[name] = str(relative)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # A previous run's timelines beside the same results.json would be linked by nothing.
        if self.path is not None and self.timelines_dir.is_dir():
            shutil.rmtree(self.timelines_dir)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str]) -> None:
        """At the top of the HTML report, where people read first: every migration's phases."""
        if table := migration_summary_html(list(self.tests.values())):
            prefix.append(table)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.path is None:
            return
        counts = summary_counts(self.tests.values())
        doc = {
            "schema": RESULTS_SCHEMA,
            "started": self.started,
            "finished": time.time(),
            "exit_status": int(exitstatus),
            "host": {"kernel": platform.release(), "python": platform.python_version()},
            "run": self.run_info(),
            "summary": counts,
            "tests": list(self.tests.values()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(doc, indent=2, default=str))
