"""The migration-mode cases (testcases/test_migration_modes.py) fail where the mode is not really used,
where the network is lost under it, or where a restore does not bring failover back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.image import GuestImage
from tests.e2e.test_flat_suite import _check, run_broken

POSTCOPY = "postcopy_migration_under_probes"
MULTIFD = "multifd_migration_under_probes"
SAVE_RESTORE = "save_and_restore"


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def test_postcopy_case_fails_when_qemu_never_switches(tmp_path: Path) -> None:
    # The capability is dropped on its way to QEMU and the switch answered without QEMU: plain precopy.
    results = run_broken(tmp_path, "without-postcopy", "-k", POSTCOPY).results()
    assert results["summary"] == {"failed": 1}
    entered = _check(results, "postcopy_entered", POSTCOPY)
    assert entered.startswith("FAIL postcopy_entered: source states ['setup', 'wait-unplug', 'active'"), entered
    assert "never switched to postcopy-active" in entered
    assert _check(results, "migration_completed", POSTCOPY).startswith("PASS")  # only the mode is missing


def test_multifd_case_fails_when_qemu_sends_no_multifd(tmp_path: Path) -> None:
    results = run_broken(tmp_path, "without-multifd", "-k", MULTIFD).results()
    assert results["summary"] == {"failed": 1}
    used = _check(results, "multifd_used", MULTIFD)
    assert used.startswith("FAIL multifd_used: 0.0 MiB sent over multifd channels"), used
    assert "says multifd False" in used  # the capability the destination echoes
    assert _check(results, "migration_completed", MULTIFD).startswith("PASS")


def test_postcopy_case_fails_where_the_destination_standby_is_deaf(tmp_path: Path) -> None:
    # Failover's promise under postcopy: the destination's standby must carry until the primary is back.
    results = run_broken(tmp_path, "isolate-standby-destination", "-k", POSTCOPY).results()
    assert _check(results, "postcopy_entered", POSTCOPY).startswith("PASS")
    verdict = _check(results, "standby_carried_on_destination", POSTCOPY)
    assert verdict.startswith("FAIL standby_carried_on_destination: longest time without a reply"), verdict
    lost, sent = map(int, re.search(r"(\d+) of (\d+) probes lost", verdict).groups())
    assert lost >= 0.9 * sent, verdict
    assert _check(results, "standby_carried_on_source", POSTCOPY).startswith("PASS")


def test_save_and_restore_fails_when_the_restore_has_no_primary(tmp_path: Path) -> None:
    # The restoring QEMU (-incoming) starts without the primary: it only warns.
    results = run_broken(tmp_path, "destination-without-primary", "-k", SAVE_RESTORE).results()
    assert results["summary"] == {"failed": 1}
    for passed in ("unplug_primary_emitted", "wait_unplug_held_until_release", "migration_completed",
                   "failover_negotiated_on_restore"):  # saved as it should be; the restore negotiates
        assert _check(results, passed, SAVE_RESTORE).startswith(f"PASS {passed}")
    restored = _check(results, "primary_restored", SAVE_RESTORE)
    assert restored.startswith("FAIL primary_restored: primary not restored"), restored
    assert "Primary device not found" in restored  # the restoring QEMU's warning
    back = _check(results, "traffic_back_on_primary", SAVE_RESTORE)
    assert back.startswith("FAIL traffic_back_on_primary: the last replies travelled on: standby"), back


def test_save_and_restore_fails_when_the_restore_fails(tmp_path: Path) -> None:
    # The option-ROM bug: the save goes as it should, the restoring QEMU refuses the file and exits
    # before it loads the standby's state, so it never negotiates.
    results = run_broken(tmp_path, "primary-with-rom", "-k", SAVE_RESTORE).results()
    assert results["summary"] == {"failed": 1}
    for passed in ("unplug_primary_emitted", "wait_unplug_held_until_release"):
        assert _check(results, passed, SAVE_RESTORE).startswith(f"PASS {passed}")
    completed = _check(results, "migration_completed", SAVE_RESTORE)
    assert completed.startswith("FAIL migration_completed: status failed"), completed
    assert "Unknown ramblock" in completed  # quoted from the restoring QEMU
    # The guest carries on on the source (resumed: a saved source stays paused).
    restored = _check(results, "primary_restored", SAVE_RESTORE)
    assert restored.startswith("FAIL primary_restored: primary not restored: migration did not complete"), restored
    negotiated = _check(results, "failover_negotiated_on_restore", SAVE_RESTORE)
    assert negotiated == "FAIL failover_negotiated_on_restore: FAILOVER_NEGOTIATED on the restoring QEMU: none"
