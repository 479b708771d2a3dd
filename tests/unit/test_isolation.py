"""The timing lock: shared holders coexist, an exclusive holder excludes everyone (separate processes)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from harness.isolation import timing_isolation

TRY = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, (fcntl.LOCK_EX if sys.argv[2] == "ex" else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    print("got")
except BlockingIOError:
    print("blocked")
"""


def _other_process_gets(lock: Path, mode: str) -> bool:
    out = subprocess.run([sys.executable, "-c", TRY, str(lock), mode], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "got"


def test_shared_holders_coexist_and_exclude_a_timing_case(tmp_path: Path) -> None:
    lock = tmp_path / "timing.lock"
    with timing_isolation([lock], timing_case=False) as how:
        assert how.startswith("beside other non-timing cases")
        assert _other_process_gets(lock, "sh")
        assert not _other_process_gets(lock, "ex")
    assert _other_process_gets(lock, "ex")


def test_a_timing_case_runs_alone(tmp_path: Path) -> None:
    lock = tmp_path / "timing.lock"
    with timing_isolation([lock], timing_case=True) as how:
        assert how.startswith("alone (timing case; waited 0.0 s")
        assert not _other_process_gets(lock, "sh")
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    os.close(fd)


def test_a_timing_case_of_a_run_that_judges_no_time_shares_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "timing.lock"
    with timing_isolation([lock], timing_case=True, mode="shared") as how:
        assert how.endswith("a timing case (--timing-isolation shared: its times include the neighbours')"), how
        assert _other_process_gets(lock, "sh")
        assert not _other_process_gets(lock, "ex")


def test_a_timing_case_has_its_pairs_lab_hosts_to_itself_and_no_others(tmp_path: Path) -> None:
    """The host topology: one lock per lab host of the case's pair; another pair's hosts stay free."""
    l1a, l1b, l1c = (tmp_path / f"timing-{name}.lock" for name in ("l1a", "l1b", "l1c"))
    with timing_isolation([l1b, l1a], timing_case=True) as how:
        assert how.startswith("alone")
        assert not _other_process_gets(l1a, "sh") and not _other_process_gets(l1b, "sh")
        l1c.touch()
        assert _other_process_gets(l1c, "ex")
