"""Flake policy: a case that failed for an environmental reason runs once more, and says so.

Environmental means :class:`~harness.errors.EnvironmentalError` (a guest that
did not boot, a control channel lost while QEMU kept running), or a failure the
bed judged the emulated hardware's (``Bed.emulation_fault``: nested or lab hosts
under TCG, an L2 that fell silent or stalled without losing a probe, an L1 that
panicked). Anything else,
above all a failed conformance check, is never retried: retrying a real
failure until it passes is how a harness loses its users' trust.

The first attempt's failing report is logged with the outcome ``rerun`` (the
terminal shows ``R``, pytest-html counts reruns), its evidence is kept in
``<artifacts>.attempt1``, and the final report carries ``run.retried`` with the
cause, so JUnit, HTML and results.json all show the case as flaky.
"""

from __future__ import annotations

import shutil
from collections.abc import Generator

import pytest
from _pytest.runner import runtestprotocol

from harness.errors import EnvironmentalError
from harness.plugin.keys import ARTIFACTS_KEY, EMULATION_FAULT_KEY, FAILURE_KEY

RETRIED_PROPERTY = "run.retried"


def environmental_cause(failure: BaseException | None) -> str | None:
    """The failure as text if it is environmental (worth one retry), else None."""
    if isinstance(failure, EnvironmentalError):
        return f"{type(failure).__name__}: {failure}"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed and call.excinfo is not None and item.stash.get(FAILURE_KEY, None) is None:
        item.stash[FAILURE_KEY] = call.excinfo.value
    return report


def _attempt(item: pytest.Item, nextitem: pytest.Item | None) -> tuple[list[pytest.TestReport], str | None]:
    item.stash[FAILURE_KEY] = None
    item.stash[EMULATION_FAULT_KEY] = None
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    if not any(report.failed for report in reports):
        return reports, None
    return reports, environmental_cause(item.stash[FAILURE_KEY]) or item.stash[EMULATION_FAULT_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports, cause = _attempt(item, nextitem)
    if cause is not None:
        for report in reports:
            if report.failed:
                report.outcome = "rerun"  # type: ignore[assignment]
                report.user_properties.append((RETRIED_PROPERTY, cause))
                item.ihook.pytest_runtest_logreport(report=report)
        _keep_first_attempt(item)
        item.user_properties.clear()
        reports, _ = _attempt(item, nextitem)
        for report in reports:
            report.user_properties.append((RETRIED_PROPERTY, f"once, after {cause}"))
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _keep_first_attempt(item: pytest.Item) -> None:
    artifacts = item.stash.get(ARTIFACTS_KEY, None)
    if artifacts is not None and artifacts.is_dir():
        kept = artifacts.with_name(artifacts.name + ".attempt1")
        shutil.rmtree(kept, ignore_errors=True)
        artifacts.rename(kept)


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    outcome: str = report.outcome  # pytest's type does not know the "rerun" this module sets
    if outcome == "rerun":
        return "rerun", "R", ("RERUN", {"yellow": True})
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reruns = terminalreporter.stats.get("rerun", [])
    if reruns:  # the reports came from this process or, under xdist, from the workers
        terminalreporter.section("flaky: retried once after an environmental error")
        for report in reruns:
            cause = dict(report.user_properties).get(RETRIED_PROPERTY, "?")
            terminalreporter.write_line(f"{report.nodeid} ({report.when}): {cause}")
