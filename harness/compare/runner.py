"""The runs of a comparison: the chosen cases, baseline and candidate interleaved on this host.

Runs alternate (baseline, candidate, baseline, ...) so that whatever drifts on a shared
host over the minutes of a comparison (load, temperature, the page cache) falls on both
sides alike. Each run is the conformance suite as a user runs it (``pytest testcases -k``),
in a directory of its own under the reports, with its log, results.json, JUnit and the
evidence of failed cases. A run's own verdict (exit status 1: a case failed) is data for the
comparison; a run that did not run (interrupted, a usage error, no case selected) stops it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import progress
from harness.compare.judgement import PracticalRule
from harness.compare.samples import SIDES, Side
from harness.distro_kernel import is_kernel_package
from harness.errors import ConfigError, HarnessError
from harness.proc import call_passing_signals

log = logging.getLogger(__name__)

DEFAULT_CASES = "test_migration_with_failover_under_probes and acpi or test_migration_with_failover_under_iperf3"
# pytest's exit statuses that are a run's verdict (0: every case passed, 1: some failed).
VERDICT_STATUSES = (0, 1)


class CompareError(HarnessError):
    """A comparison could not be made (a run that did not run)."""


@dataclass(frozen=True)
class SideSettings:
    """What differs between the two sides: the QEMU, or the guest kernel (with its modules)."""

    qemu_binary: str
    guest_kernel: Path | None = None
    guest_modules: Path | None = None

    def describe(self) -> str:
        kernel = f", guest kernel {self.guest_kernel}" if self.guest_kernel else ""
        return f"QEMU {self.qemu_binary}{kernel}"


@dataclass(frozen=True)
class CompareSettings:
    baseline: SideSettings
    candidate: SideSettings
    reports: Path
    cases_dir: Path
    runs: int = 10  # per side
    select: str = DEFAULT_CASES
    metrics: tuple[str, ...] = ()  # fnmatch patterns of the metrics judged; empty: every judged metric
    profile: Path | None = None
    pytest_args: tuple[str, ...] = ()
    rule: PracticalRule = field(default_factory=PracticalRule)

    def side(self, side: Side) -> SideSettings:
        return self.baseline if side == "baseline" else self.candidate

    def validate(self) -> None:
        if self.runs < 1:
            raise ConfigError(f"--runs {self.runs}: give at least 1 run per side (10 to detect a difference)")
        for side in SIDES:
            for option, path in (("guest-kernel", self.side(side).guest_kernel),
                                 ("guest-modules", self.side(side).guest_modules)):
                # A package name (linux-image-...) is for apt to find: the runs say if it cannot.
                if path is not None and not path.exists() and not (option == "guest-kernel"
                                                                   and is_kernel_package(path)):
                    raise ConfigError(f"--{side}-{option}: {path} does not exist")
        if self.profile is not None and not self.profile.is_file():
            raise ConfigError(f"--profile: {self.profile} does not exist")


@dataclass(frozen=True)
class RunRequest:
    """Run *number* (1-based, over both sides) of a comparison, into *directory*."""

    number: int
    side: Side
    directory: Path

    @property
    def results(self) -> Path:
        return self.directory / "results.json"


@dataclass(frozen=True)
class RunRecord:
    number: int
    side: Side
    directory: Path
    exit_status: int
    duration_s: float


# How a run is run (injectable: the tests of the comparison's logic run none).
RunCase = Callable[[CompareSettings, RunRequest], int]


def run_order(runs: int) -> list[tuple[int, Side]]:
    """Baseline, candidate, baseline, ...: 2 * *runs* requests numbered from 1."""
    return [(i + 1, SIDES[i % 2]) for i in range(2 * runs)]


def pytest_argv(settings: CompareSettings, request: RunRequest) -> list[str]:
    side = settings.side(request.side)
    argv = [sys.executable, "-m", "pytest", str(settings.cases_dir), "-k", settings.select, "-p", "no:cacheprovider",
            f"--qemu-binary={side.qemu_binary}", f"--results-json={request.results}",
            f"--junitxml={request.directory / 'junit.xml'}", f"--artifacts-dir={request.directory / 'artifacts'}"]
    if side.guest_kernel is not None:
        argv.append(f"--guest-kernel={side.guest_kernel}")
    if side.guest_modules is not None:
        argv.append(f"--guest-modules={side.guest_modules}")
    if settings.profile is not None:
        argv.append(f"--harness-config={settings.profile}")
    return argv + list(settings.pytest_args)


def run_with_pytest(settings: CompareSettings, request: RunRequest) -> int:
    """One run as a user runs the suite, its output in the run's ``pytest.log``; Ctrl-C reaches it once."""
    with (request.directory / "pytest.log").open("w") as out:
        return call_passing_signals(pytest_argv(settings, request), stdout=out)


def _time_left(done: Sequence[RunRecord], remaining: int) -> str:
    if not done:
        return "time left unknown"
    seconds = sum(r.duration_s for r in done) / len(done) * remaining
    return f"about {seconds:.0f} s left" if seconds < 120 else f"about {seconds / 60:.0f} min left"


def run_all(settings: CompareSettings, run_case: RunCase = run_with_pytest) -> list[RunRecord]:
    """Every run of the comparison, in order, with progress; stops at a run that did not run."""
    order = run_order(settings.runs)
    records: list[RunRecord] = []
    for number, side in order:
        request = RunRequest(number, side, settings.reports / "runs" / f"{number:02d}-{side}")
        request.directory.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with progress.step(f"compare: run {number} of {len(order)} ({side}; "
                           f"{_time_left(records, len(order) - number + 1)})") as step:
            status = run_case(settings, request)
            step.result = {0: "passed", 1: "a case failed"}.get(status, f"pytest exit status {status}")
        records.append(RunRecord(number, side, request.directory, status, time.monotonic() - started))
        if status == 5:
            raise ConfigError(f"-k {settings.select!r} selects no case (pytest exit status 5; "
                              f"see {request.directory / 'pytest.log'})")
        if status not in VERDICT_STATUSES or not request.results.exists():
            raise CompareError(f"run {number} ({side}) did not run to its verdict: pytest exit status {status}, "
                               f"{'no ' if not request.results.exists() else ''}results.json; its log: "
                               f"{request.directory / 'pytest.log'}")
    return records
