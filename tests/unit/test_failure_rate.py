"""bench/failure_rate.py's tally of repeated runs, on the JUnit file of a real run of the flake policy's
plain cases (tests/plugin/test_rerun.py): a case that passed on its retry, one that failed on both
attempts, one that failed and was never retried."""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict

from tests.conftest import DATA, REPO

_spec = importlib.util.spec_from_file_location("failure_rate", REPO / "bench" / "failure_rate.py")
assert _spec is not None and _spec.loader is not None
failure_rate = importlib.util.module_from_spec(_spec)
sys.modules["failure_rate"] = failure_rate  # its dataclass looks its module up there
_spec.loader.exec_module(failure_rate)


def _tally(runs: int) -> dict[str, failure_rate.Tally]:
    tallies: dict[str, failure_rate.Tally] = defaultdict(failure_rate.Tally)
    for _ in range(runs):
        failure_rate.tally_junit(DATA / "junit-flaky-run.xml", tallies)
    return tallies


def test_outcomes_and_retry_causes_add_up_over_runs() -> None:
    tallies = _tally(2)
    boot, lost, check = (tallies[f"test_flaky::{name}"] for name in
                         ("test_boot_flakes_once", "test_channel_lost_twice", "test_check_fails"))
    assert (boot.passed, boot.failed, len(boot.retried)) == (2, 0, 2)
    assert boot.retried[0] == "once, after GuestBootFailed: QEMU exited while the guest booted"
    assert (lost.passed, lost.failed, len(lost.retried)) == (0, 2, 2)
    assert (check.passed, check.failed, check.retried) == (0, 2, [])


def test_the_summary_line_gives_the_rates() -> None:
    text = failure_rate.render(_tally(2), 2)
    assert text.splitlines()[-1] == ("2 runs, 6 test executions: 4 failed (66.7 %), 4 passed or failed only "
                                     "after a retry (66.7 %)")
    assert "    retried once, after ControlChannelLost: control channel: closed by QEMU" in text

