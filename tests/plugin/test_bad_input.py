"""Bad input and missing capabilities: one clear message naming the problem and the fix.

Each case runs the real conformance suite in a subprocess, as a user would;
none of them gets as far as booting a VM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, run_suite

USAGE_ERROR = 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--accel", "hvf"), "argument --accel: invalid choice: 'hvf'"),
        (("--guest-kernel", "/nonexistent/bzImage"), "guest_kernel: /nonexistent/bzImage is not a file"),
        (("--threshold", "max_gap_ms"), "--threshold 'max_gap_ms': expected NAME=VALUE"),
        (("--threshold", "max_gapms=10"), "thresholds.max_gapms (options): Extra inputs are not permitted"),
        (("--harness-config", "/nonexistent.toml"), "--harness-config: /nonexistent.toml does not exist"),
        (("--allow-log", "netdev (hn1"), "allow_log (options): Value error, 'netdev (hn1' is not a valid regular"),
        (("--topology", "host"), "topology host: give the lab inventory, --inventory lab.toml"),
        (("--topology", "host", "--inventory", "/nonexistent.toml"),
         "/nonexistent.toml: no such inventory file (start from profiles/lab-example.toml)"),
        (("--inventory", str(REPO / "profiles" / "lab-example.toml")),
         "inventory: only the host topology uses one (this run's is flat): add --topology host"),
        (("--topology", "host", "--inventory", str(REPO / "profiles" / "lab-example.toml"), "-n", "2"),
         "-n 2: 2 xdist workers, but the inventory has 1 failover pair(s) (default), one per worker: run with -n 1, "
         "or add [pairs.<name>] to the inventory"),
    ],
)
def test_bad_option_is_a_usage_error(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    run = run_suite(tmp_path, *args)
    assert run.returncode == USAGE_ERROR, run.output
    assert message in run.output


def _skip_reason(run_output: str) -> str:
    lines = [line for line in run_output.splitlines() if line.startswith("SKIPPED")]
    assert lines, run_output
    return lines[0]


def test_missing_qemu_skips_with_fix_and_errors_when_required(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "--qemu-binary", "/nonexistent/qemu-system-x86_64")
    assert run.returncode == 0, run.output
    assert "QEMU binary '/nonexistent/qemu-system-x86_64' not found: run 'make setup'" in _skip_reason(run.output)
    assert set(run.results()["summary"]) == {"skipped"}, run.results()["summary"]  # every case of the suite

    run = run_suite(tmp_path, "--qemu-binary", "/nonexistent/qemu-system-x86_64", "--require-resources")
    assert run.returncode == 1, run.output
    assert "required resource missing: QEMU binary" in run.output


def test_old_qemu_is_refused(tmp_path: Path) -> None:
    # A stand-in that reports itself as Debian 12's QEMU: no such QEMU is installed here.
    fake = tmp_path / "qemu-7.2"
    fake.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)'\n")
    fake.chmod(0o755)
    run = run_suite(tmp_path, "--qemu-binary", str(fake))
    assert "QEMU 7.2.19" in _skip_reason(run.output) and "older than 8.0" in run.output


def test_missing_tun_device(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to hide /dev/net/tun in a private mount namespace")
    # Hide /dev/net in a private mount namespace: the host keeps its tun device.
    script = 'mount -t tmpfs none /dev/net && exec "$@"'
    run = run_suite(tmp_path, prefix=("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"))
    assert "/dev/net/tun is missing or not accessible: load the tun module" in _skip_reason(run.output)


def test_not_root(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop to an unprivileged user")
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    probe = subprocess.run([*nobody, "test", "-r", str(REPO / "testcases" / "test_migration.py")], check=False)
    if probe.returncode != 0:
        pytest.skip(f"an unprivileged user cannot read the checkout at {REPO}")
    # pytest's tmp_path lives under root's 0700 base dir: give the user its own.
    with tempfile.TemporaryDirectory(prefix="harness-test-nobody-") as tmp:
        os.chmod(tmp, 0o777)
        run = run_suite(Path(tmp), prefix=nobody)
    assert "not root: namespaces, bridges and taps need root" in _skip_reason(run.output)


def test_case_needing_what_the_topology_lacks_is_skipped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_needs="""
        import pytest

        @pytest.mark.bed_needs("teleportation")
        def test_needs_teleportation(failover_bed):
            raise AssertionError("must not run")
    """)
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*the flat topology cannot provide: teleportation*"])
