"""Booted-guest snapshots end to end: a restored source passes like a booted one; a bad snapshot costs a boot."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import DEFAULT_CACHE_DIR
from harness.image import GuestImage
from harness.topologies.flat import FlatBed
from tests.conftest import run_suite
from tests.e2e.test_flat_suite import PROBES_CASE, leftovers


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def _private_snapshots(tmp_path: Path) -> Path:
    """A harness config whose cache shares the user's built artifacts and timing lock, not its
    snapshots. In make check's shared pass another worker's runs restore, drop and save the same
    snapshot: CI saw this test's corrupted file dropped by a neighbour's restore before its own run
    could try it. (The build locks are not shared: filelock refuses a symlink; nothing is built.)"""
    cache = tmp_path / "cache"
    cache.mkdir()
    for entry in DEFAULT_CACHE_DIR.iterdir():
        if (entry.is_dir() and entry.name != "snapshots") or entry.name == "timing.lock":
            (cache / entry.name).symlink_to(entry)
    profile = tmp_path / "private-snapshots.toml"
    profile.write_text(f'cache_dir = "{cache}"\n')
    return profile


def _probe_case(tmp_path: Path, profile: Path) -> dict:
    run = run_suite(tmp_path, *PROBES_CASE, "--harness-config", str(profile))
    assert run.returncode == 0, run.output
    assert leftovers(run.pid) == []
    (test,) = run.results()["tests"]
    return test


def test_restored_source_passes_every_check(tmp_path: Path) -> None:
    profile = _private_snapshots(tmp_path)
    _probe_case(tmp_path / "first", profile)  # saves the snapshot
    test = _probe_case(tmp_path / "restored", profile)
    assert "snapshot_restore_s" in test["run"] and "boot_s" not in test["run"], test["run"]
    assert all(v.startswith("PASS") for v in test["checks"].values()), test["checks"]
    assert test["metrics"]["final_path"] == "primary" and test["metrics"]["switch_to_standby_ms"] is not None


def test_a_snapshot_that_does_not_restore_costs_a_boot_not_the_case(tmp_path: Path) -> None:
    profile = _private_snapshots(tmp_path)
    _probe_case(tmp_path / "first", profile)
    (snapshot,) = (tmp_path / "cache" / "snapshots").glob("*.mig")  # the one its run saved
    snapshot.write_bytes(b"not a migration stream")
    test = _probe_case(tmp_path / "after", profile)
    assert test["run"]["snapshot_error"] == f"restoring snapshot {snapshot} failed: incoming migration failed"
    assert "boot_s" in test["run"]  # booted instead
    assert all(v.startswith("PASS") for v in test["checks"].values()), test["checks"]  # logs_clean too
    assert not snapshot.exists()  # dropped: the next case saves a good one



def test_a_restored_source_is_settled_like_a_booted_one(failover_bed: FlatBed) -> None:
    # Restoring makes the guest talk through its standby until its primary is back; the
    # bed must hand over a guest on its primary, with no tap holding the failover MAC.
    bed = failover_bed
    assert bed.snapshot_restore_s is not None, bed.snapshot_error or "booted, not restored"
    assert bed.guest.failover().primary_active
    fdb = bed.network.bridge_ns.run(["bridge", "fdb", "show", "br", "src-nic"])
    learned = [line for line in fdb.splitlines() if line.startswith(bed.addressing.failover_mac)]
    assert not learned, fdb
