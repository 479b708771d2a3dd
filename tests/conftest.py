"""Shared helpers for the harness's own tests."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "whole_host: needs this host's cores to itself (L1 hypervisors under TCG, in-process timing "
        "calibration, a timeout that must land mid-migration); make check runs these after the rest, one at a "
        "time (scripts/check.sh)")
    config.addinivalue_line(
        "markers", "check_full(why): adds confidence but proves nothing make check does not (why says what "
        "does); make check leaves it out, make check-full runs it")


def load_json_gz(path: Path) -> Any:
    """A recorded JSON document, stored gzip-compressed in tests/data."""
    with gzip.open(path) as f:
        return json.load(f)


def wait_until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll *condition* until it holds; fail the test saying *what* did not happen in time."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline_s} s")
        time.sleep(0.05)


@pytest.fixture
def data_dir() -> Path:
    """Recorded data from real runs (timelines, guest output)."""
    return DATA


REPO = Path(__file__).resolve().parent.parent
# How long an interrupted suite run gets to tear down (nested: two L1s to stop) before SIGKILL.
INTERRUPTED_RUN_TEARDOWN_S = 120.0


@dataclass
class SuiteRun:
    """A finished ``pytest testcases`` subprocess: what a user would see, plus its pid."""

    returncode: int
    output: str
    pid: int
    results_path: Path
    artifacts: Path

    def results(self) -> dict[str, Any]:
        return json.loads(self.results_path.read_text())


def suite_argv(tmp_path: Path, *args: str, prefix: tuple[str, ...] = ()) -> list[str]:
    """``pytest testcases`` as a user runs it from a terminal, behind *prefix* (a command that execs
    it): with SIGINT at its default, which Python turns into KeyboardInterrupt. A job started in the
    background (``cmd &`` in a script, some CI runners) inherits SIGINT ignored, and Ctrl-C's tests
    would then see their SIGINT do nothing. ``env`` comes first: it runs as us, before a *prefix*
    that drops privileges."""
    return ["env", "--default-signal=INT", *prefix, sys.executable, "-m", "pytest", str(REPO / "testcases"),
            "-p", "no:cacheprovider", "-rA", "--artifacts-dir", str(tmp_path / "artifacts"),
            "--results-json", str(tmp_path / "results.json"), "--junitxml", str(tmp_path / "junit.xml"), *args]


# What watches a suite run while it runs (and may stop it): a context manager made for its process.
RunWatch = Callable[[subprocess.Popen[str]], AbstractContextManager[object]]


def run_suite(tmp_path: Path, *args: str, prefix: tuple[str, ...] = (), timeout: float = 600,
              watch: RunWatch | None = None) -> SuiteRun:
    """Run the conformance suite as a user would, in a subprocess, and wait for it (inside *watch*'s
    context for its process, if given)."""
    proc = subprocess.Popen(suite_argv(tmp_path, *args, prefix=prefix), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        with watch(proc) if watch is not None else nullcontext():
            out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        # Interrupted (Ctrl-C of make check, a timeout): SIGTERM, which the plugin turns into Ctrl-C's
        # teardown (SIGINT may be ignored in a background job), so the run is not orphaned with its QEMUs
        # and namespaces (seen when only make check's pytest got SIGINT).
        proc.terminate()
        try:
            proc.communicate(timeout=INTERRUPTED_RUN_TEARDOWN_S)
        finally:
            proc.kill()
        raise
    return SuiteRun(proc.returncode, out, proc.pid, tmp_path / "results.json", tmp_path / "artifacts")
