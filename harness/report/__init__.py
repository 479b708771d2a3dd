"""Reports: JUnit properties, HTML extras and ``results.json``, all from the same numbers.

Tests record ``metric.<name>`` and ``check.<name>`` user properties (JUnit
xunit1 ``<properties>``). The HTML report shows them as a table per test, and
:class:`ResultsJson` (controller side, so it works under xdist) writes every
test's outcome, metrics and checks to ``results.json`` for trend tooling.
"""

from __future__ import annotations

import html
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.metrics import MigrationMetrics
from harness.timeline import Timeline

RESULTS_SCHEMA = 1
# User properties with this prefix carry bulk data (timelines) for results.json
# only: ResultsJson removes them from the report before JUnit and HTML see it.
DATA_PREFIX = "data."


def record_metrics(record: Callable[[str, object], None], metrics: MigrationMetrics, prefix: str = "") -> None:
    """Record every scalar metric as a JUnit property ``metric.[prefix]<name>`` (builtins only, for xdist)."""
    for name, value in metrics.scalars().items():
        record(f"metric.{prefix}{name}", round(value, 3) if isinstance(value, float) else value)


def record_timeline(record: Callable[[str, object], None], timeline: Timeline, name: str = "timeline") -> None:
    """Attach the whole timeline for ``results.json`` (a ``data.`` property: kept out of JUnit and HTML)."""
    record(f"{DATA_PREFIX}{name}", json.dumps(timeline.to_dict(), separators=(",", ":")))


def properties_table(properties: list[tuple[str, object]]) -> str:
    """An HTML table of the metric and check properties of one test."""
    rows = []
    for name, value in properties:
        if not name.startswith(("metric.", "check.", "run.")):
            continue
        text = str(value)
        css = ""
        if name.startswith("check."):
            css = ' style="color:#0a0"' if text.startswith("PASS") else ' style="color:#c00;font-weight:bold"'
        rows.append(f"<tr><td>{html.escape(name)}</td><td{css}>{html.escape(text)}</td></tr>")
    if not rows:
        return ""
    return '<table class="harness-props"><tr><th>property</th><th>value</th></tr>' + "".join(rows) + "</table>"


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
        entry.setdefault("phases_s", {})[report.when] = round(report.duration, 3)  # setup + call: start → verdict
        if report.outcome == "rerun":  # harness.rerun: an environmental failure, retried once
            entry["reruns"] = entry.get("reruns", 0) + 1
            entry["rerun_message"] = str(report.longrepr)[-4000:]
            return
        if report.failed:
            entry["outcome"] = "error" if report.when != "call" else "failed"
            entry["message"] = str(report.longrepr)[-4000:]
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            if isinstance(report.longrepr, tuple):
                entry["message"] = report.longrepr[2]
        data = [(n, v) for n, v in report.user_properties if n.startswith(DATA_PREFIX)]
        report.user_properties = [(n, v) for n, v in report.user_properties if not n.startswith(DATA_PREFIX)]
        # Every phase's report carries the properties recorded so far; parse the
        # (large) data once, from the last phase, and only when it will be written.
        if self.path is not None and report.when == "teardown":
            for name, value in data:
                entry.setdefault("data", {})[name.removeprefix(DATA_PREFIX)] = json.loads(str(value))
        for name, value in report.user_properties:
            if name.startswith("metric."):
                entry["metrics"][name.removeprefix("metric.")] = value
            elif name.startswith("check."):
                entry["checks"][name.removeprefix("check.")] = value
            elif name.startswith("run."):
                entry.setdefault("run", {})[name.removeprefix("run.")] = value

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.path is None:
            return
        counts: dict[str, int] = {}
        for t in self.tests.values():
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
            if t.get("reruns"):
                counts["flaky"] = counts.get("flaky", 0) + 1
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
