"""A paused VM's migration and a PCI rescan during one: the cases and the broken setups that fail them.

The paused-VM case is QEMU's known limitation (a paused guest cannot release its
primary; the pause-vm fix was never merged): a strict xfail on QEMU 10.0 that the
harness reports within seconds, naming the cause, while the source recovers. It
XPASSes (and fails) on a QEMU that lets the guest release its primary, and fails,
not XFAILs, on one without failover. The rescan case stands for QEMU 348e354417 (an
ejected primary answered config reads, so a guest rescan re-found it on the source):
a NIC the guest finds only by that rescan fails it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.image import GuestImage
from tests.conftest import run_suite
from tests.e2e.test_flat_suite import WRAPPERS, _check, leftovers, run_broken

PAUSED = "paused_vm_migrates"
RESCAN = "pci_rescan_during_migration"
# The harness cancels a paused source's migration within seconds, not at the 30 s deadline.
PROMPT_HANG_REPORT_MS = 5000


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def test_paused_vm_is_held_in_wait_unplug_reported_at_once_and_recovered(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-k", PAUSED)  # QEMU 10.0: the known limitation, a strict xfail
    assert run.returncode == 0, run.output
    results = run.results()
    assert results["summary"] == {"xfailed": 1}, run.output
    held = _check(results, "unplug_done_while_paused", PAUSED)
    assert held.startswith("FAIL unplug_done_while_paused: source states ['setup', 'wait-unplug', 'cancelling', "
                           "'cancelled']; the harness cancelled: migration held in wait-unplug while the VM is "
                           "paused (query-status: paused for "), held
    assert "a paused guest cannot release its primary" in held
    (test,) = results["tests"]
    assert test["metrics"]["unplug_wait_ms"] < PROMPT_HANG_REPORT_MS, test["metrics"]
    for name in ("migration_ended_as_expected", "source_kept_running", "primary_replugged", "traffic_back_on_primary"):
        assert _check(results, f"recovery.{name}", PAUSED).startswith(f"PASS recovery.{name}")
    assert leftovers(run.pid) == []


def test_paused_vm_case_tells_when_qemu_is_fixed(tmp_path: Path) -> None:
    # A second monitor resumes the VM once the migration waits in wait-unplug, as a QEMU that lets a
    # paused guest release its primary would: the migration completes and the strict xfail fails.
    run = run_suite(tmp_path, "--qemu-binary", str(WRAPPERS / "paused-unplug-fixed"), "--no-snapshots", "-k", PAUSED)
    assert run.returncode == 1, run.output
    assert "XPASS(strict)" in run.output and "a paused guest cannot release its primary" in run.output
    results = run.results()
    assert _check(results, "migration_completed", PAUSED).startswith("PASS migration_completed")
    assert _check(results, "primary_restored", PAUSED).startswith("PASS primary_restored")
    assert leftovers(run.pid) == []


def test_paused_vm_case_fails_without_failover(tmp_path: Path) -> None:
    # The xfail absorbs only the hold in wait-unplug: a QEMU that never negotiates failover fails.
    run = run_broken(tmp_path, "no-failover", "-k", PAUSED)
    results = run.results()
    assert results["summary"] == {"failed": 1}, run.output
    assert _check(results, "failover_negotiated", PAUSED).startswith("FAIL failover_negotiated")
    assert _check(results, "wait_unplug_entered", PAUSED).startswith("FAIL wait_unplug_entered")
    assert _check(results, "unplug_done_while_paused", PAUSED).startswith("PASS unplug_done_while_paused")


def test_rescan_case_fails_when_the_rescan_finds_a_primary_on_the_source(tmp_path: Path) -> None:
    # A NIC with the failover MAC that the guest was never told of: the rescan during active finds
    # it and the guest enslaves it as its primary on the source.
    run = run_broken(tmp_path, "nic-hidden-until-rescan", "-k", RESCAN)
    results = run.results()
    assert _check(results, "primary_enslaved_before_migration", RESCAN).endswith("(vmxnet3,up)")
    assert _check(results, "rescan_while_active", RESCAN).startswith("PASS rescan_while_active")
    stayed = _check(results, "primary_stayed_away_on_source", RESCAN)
    assert stayed.startswith("FAIL primary_stayed_away_on_source: after the rescan: "), stayed
    assert "(e1000e," in stayed and "primary registered between its release and RESUME: eth" in stayed, stayed


def test_rescan_case_fails_when_the_migration_is_not_active_after_the_rescan(tmp_path: Path) -> None:
    # The option-ROM bug: the destination refuses the stream, the migration fails during the rescan.
    run = run_broken(tmp_path, "primary-with-rom", "-k", RESCAN)
    active = _check(run.results(), "rescan_while_active", RESCAN)
    assert active == "FAIL rescan_while_active: 'echo 1 > /sys/bus/pci/rescan' exit 0; migration status after it: " \
                     "failed", active
