"""Booted-guest snapshots end to end: a restored source passes like a booted one; a bad snapshot costs a boot."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import build_config
from harness.image import GuestImage
from harness.snapshot import SnapshotStore, snapshot_key
from harness.topologies.flat import FlatBed
from tests.conftest import run_suite
from tests.e2e.test_flat_suite import PROBES_CASE, leftovers


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def _probe_case(tmp_path: Path) -> dict:
    run = run_suite(tmp_path, *PROBES_CASE)
    assert run.returncode == 0, run.output
    assert leftovers(run.pid) == []
    (test,) = run.results()["tests"]
    return test


def _snapshot_of_the_probe_case(guest_image: GuestImage, accel: str) -> Path:
    config = build_config(None, {})
    spec = FlatBed(config, guest_image, accel, "key", Path("/nonexistent"), Path("/nonexistent"))._spec("src")
    return SnapshotStore(config.cache_dir / "snapshots").path(snapshot_key(spec))


def test_restored_source_passes_every_check(tmp_path: Path) -> None:
    _probe_case(tmp_path / "first")  # saves the snapshot if this machine has none yet
    test = _probe_case(tmp_path / "restored")
    assert "snapshot_restore_s" in test["run"] and "boot_s" not in test["run"], test["run"]
    assert all(v.startswith("PASS") for v in test["checks"].values()), test["checks"]
    assert test["metrics"]["final_path"] == "primary" and test["metrics"]["switch_to_standby_ms"] is not None


def test_a_snapshot_that_does_not_restore_costs_a_boot_not_the_case(tmp_path: Path, guest_image: GuestImage) -> None:
    first = _probe_case(tmp_path / "first")
    snapshot = _snapshot_of_the_probe_case(guest_image, first["run"]["accel"])
    assert snapshot.exists()
    snapshot.write_bytes(b"not a migration stream")
    test = _probe_case(tmp_path / "after")
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
