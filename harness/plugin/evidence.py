"""Per-test evidence: the log scan's verdict, the HTML report's extras (properties, charts, logs) and links
to a failed case's files."""

from __future__ import annotations

import base64
import os
from collections.abc import Generator
from pathlib import Path

import pytest

from harness.errors import LogTrouble
from harness.logscan import compile_allow_list, describe, scan_artifacts
from harness.plugin.keys import ARTIFACTS_KEY, BED_ALLOWS_KEY, CONFIG_KEY, FAILURE_KEY, PHASE_REPORTS_KEY
from harness.report import properties_table


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(PHASE_REPORTS_KEY, {})[report.when] = report
    if report.when == "call":
        _scan_logs(item, report)
    if report.when == "call" or (report.when == "setup" and report.failed):
        _attach_extras(item, report)
    if report.when == "teardown" and failed_so_far(item):
        _link_evidence(item, report)
    return report


def failed_so_far(item: pytest.Item) -> bool:
    return any(r.failed for r in item.stash.get(PHASE_REPORTS_KEY, {}).values())


def _link_evidence(item: pytest.Item, report: pytest.TestReport) -> None:
    """Link every file of a failed case's evidence (and of a retried first attempt) from the HTML report."""
    artifacts = item.stash.get(ARTIFACTS_KEY, None)
    html_path = item.config.option.htmlpath if hasattr(item.config.option, "htmlpath") else None
    if artifacts is None or not html_path:
        return
    from pytest_html import extras

    report_dir = Path(html_path).resolve().parent
    links = []
    for directory in (artifacts, artifacts.with_name(artifacts.name + ".attempt1")):
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            links.append(extras.url(os.path.relpath(path, report_dir), name=str(path.relative_to(artifacts.parent))))
    _add_html_extras(report, links)


def _scan_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """Fail a passing case whose guests or QEMUs printed trouble (harness.logscan); quote it either way."""
    artifacts = item.stash.get(ARTIFACTS_KEY, None)
    if artifacts is None or not artifacts.is_dir() or hasattr(report, "wasxfail"):
        return
    patterns = [*item.config.stash[CONFIG_KEY].allow_log, *item.stash.get(BED_ALLOWS_KEY, []),
                *(p for marker in item.iter_markers("allow_log") for p in marker.args)]
    try:
        allow = compile_allow_list(patterns)
    except ValueError as e:
        raise pytest.UsageError(f"{item.nodeid}: allow_log marker: {e}") from None
    findings = scan_artifacts(artifacts, allow)
    verdict = (f"FAIL logs_clean: {len(findings)} line(s), first: {findings[0]}" if findings
               else "PASS logs_clean: no kernel warning, call trace, unexpected QEMU message or guest reset")
    for properties in (item.user_properties, report.user_properties):
        properties.append(("check.logs_clean", verdict))
    if not findings:
        return
    if report.passed:
        report.outcome = "failed"
        report.longrepr = describe(findings)
        item.stash[FAILURE_KEY] = LogTrouble(str(findings[0]))  # the bed judges it at teardown
    else:
        report.sections.append(("log scan", describe(findings)))


def _attach_extras(item: pytest.Item, report: pytest.TestReport) -> None:
    try:
        from pytest_html import extras
    except ImportError:
        return
    added = []
    table = properties_table(item.user_properties)
    if table:
        added.append(extras.html(table))
    artifacts = item.stash.get(ARTIFACTS_KEY, None)
    if artifacts is not None:
        for chart in sorted(artifacts.rglob("*.png")):
            name = str(chart.relative_to(artifacts).with_suffix(""))
            added.append(extras.png(base64.b64encode(chart.read_bytes()).decode(), name=name))
    if report.failed and artifacts is not None and artifacts.is_dir():
        for path in sorted(artifacts.iterdir()):
            if path.suffix in (".log", ".jsonl", ".stderr") and path.stat().st_size:
                text = path.read_text(errors="replace")
                added.append(extras.text(text[-20000:], name=path.name))
    _add_html_extras(report, added)


def _add_html_extras(report: pytest.TestReport, extras: list[dict[str, str | None]]) -> None:
    # pytest-html reads report.extras, an attribute of its own that pytest's TestReport does not declare.
    report.extras = [*getattr(report, "extras", []), *extras]  # type: ignore[attr-defined]
