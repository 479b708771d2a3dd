"""Leaks under abuse: whatever happens to a run, nothing of it stays on the host.

Each test abuses a real run of the suite (real QEMU, namespaces, taps,
sockets) and then looks for its leftovers by the run's pid: namespaces
(``fohx-<pid>-*``), run directories with their sockets (``/tmp/fohx-<pid>-*``)
and processes started from them. VF bindings: the flat topology binds none.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.image import GuestImage
from tests.conftest import REPO, run_suite, suite_argv
from tests.e2e.test_flat_suite import PROBES_CASE, leftovers

CLI = Path(sys.executable).parent / "failover-harness"


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def qemu_pids(owner: int, name: str = "") -> list[int]:
    """QEMU processes of run *owner* (by its run directory in their command line), optionally of VM *name*."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(args).decode(errors="replace")
        if ("qemu-system" in text and f"/tmp/fohx-{owner}-" in text and (not name or f"-name {name} " in text)
                and "<defunct>" not in text):
            found.append(int(cmdline.parent.name))
    return found


def wait_until(condition: Callable[[], object], proc: subprocess.Popen[str], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stdout.read() if proc.stdout else ''}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.1)


def start_suite(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """A suite run to interrupt or crash: it judges no time, so it need not wait for the host-wide timing
    lock (the crash test took 125 s in CI, 5 s alone, most likely waiting for the lock while the other
    worker ran timing cases: the comparison's runs hold it for minutes)."""
    argv = suite_argv(tmp_path, "--timing-isolation", "shared", *args)
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out


# The dirtying case's migration takes about 23 s under TCG, from some 14 s into the case (booted
# cold) to some 37 s: a 25 s timeout lands inside it with seconds to spare either way. The probe
# case's 1 s migration made any timeout a race with the machine's pace (one run finished in 15.1 s).
TIMEOUT_CASE = ("-k", "dirtying")
CASE_TIMEOUT_S = 25


@pytest.mark.whole_host  # the timeout must land inside the migration: the case's pace must be the host's own
def test_case_that_times_out_leaves_nothing(tmp_path: Path) -> None:
    # pytest-timeout (signal method) interrupts the case mid-migration; teardown still runs.
    run = run_suite(tmp_path, *TIMEOUT_CASE, "--timeout", str(CASE_TIMEOUT_S), "--no-snapshots")
    assert run.returncode == 1, run.output
    assert f"Timeout (>{CASE_TIMEOUT_S}.0s)" in run.output
    assert "rerun" not in run.output.strip().splitlines()[-1]  # a timeout is not environmental: never retried
    assert leftovers(run.pid) == []


def test_sigint_during_a_migration_leaves_nothing(tmp_path: Path) -> None:
    proc = start_suite(tmp_path, *PROBES_CASE)
    wait_until(lambda: qemu_pids(proc.pid, "dst"), proc, "the destination QEMU")
    proc.send_signal(signal.SIGINT)
    out = finish(proc)
    assert "KeyboardInterrupt" in out, out
    assert leftovers(proc.pid) == []


def test_qemu_crashing_mid_case_fails_it_and_leaves_nothing(tmp_path: Path) -> None:
    proc = start_suite(tmp_path, *PROBES_CASE)
    wait_until(lambda: qemu_pids(proc.pid, "dst"), proc, "the destination QEMU")
    (source,) = qemu_pids(proc.pid, "src")
    os.kill(source, signal.SIGSEGV)
    out = finish(proc, timeout=300)
    assert proc.returncode == 1, out
    assert "src: QEMU killed by SIGSEGV" in out, out  # the failure names the crash
    assert "rerun" not in out.strip().splitlines()[-1]  # a QEMU that died is a finding, not the environment's
    assert leftovers(proc.pid) == []


def test_killed_xdist_worker_leaves_nothing(tmp_path: Path) -> None:
    proc = start_suite(tmp_path, *PROBES_CASE, "-n", "1")
    owners: list[int] = []

    def worker_qemu() -> bool:  # the worker's QEMU carries the worker's pid, not the controller's
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        owners[:] = [int(c) for c in children if qemu_pids(int(c), "src")]
        return bool(owners)

    wait_until(worker_qemu, proc, "the worker's QEMU")
    os.kill(owners[0], signal.SIGKILL)
    out = finish(proc, timeout=300)
    assert proc.returncode == 1, out
    assert "crashed" in out, out  # xdist reports the worker's death
    assert leftovers(owners[0]) == [] and leftovers(proc.pid) == []


# whole_host: every suite run sweeps dead runs' leftovers as it starts, so a run starting on the other
# xdist worker could sweep this killed run's before the sweep under test sees them (seen in make check).
@pytest.mark.whole_host
def test_sweep_cleans_up_after_sigkill(tmp_path: Path) -> None:
    proc = start_suite(tmp_path, *PROBES_CASE)
    wait_until(lambda: qemu_pids(proc.pid, "src"), proc, "the source QEMU")
    proc.kill()  # SIGKILL: no teardown, no atexit
    proc.wait()
    time.sleep(0.5)
    left = leftovers(proc.pid)
    assert any(item.startswith("netns") for item in left), left  # otherwise the sweep would prove nothing
    assert not any(item.startswith("process") for item in left), left  # QEMU dies with its parent (PDEATHSIG)
    swept = subprocess.run([str(CLI), "sweep"], capture_output=True, text=True, timeout=120)
    assert swept.returncode == 0, swept.stderr
    assert f"removed namespace fohx-{proc.pid}-" in swept.stdout
    assert leftovers(proc.pid) == []
