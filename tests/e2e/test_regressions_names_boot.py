"""The guest-interface cases (testcases/test_guest_interfaces.py) fail on broken guests of their own.

Both broken guests run a watcher in the guest's early userspace
(``qemu-wrappers/guest-watcher``): one gives every primary the guest registers
a new name, as a naming rule that renames a returning slave would (what Linux
8065a779f17e is about); the other powers the primary's slot off from the guest
shortly after boot, as the guest's pciehp did before QEMU df72184ec1, once the
harness's readiness check has seen the primary enslaved.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.image import GuestImage
from tests.e2e.test_flat_suite import _check, run_broken


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def test_names_case_fails_when_the_returning_primary_is_renamed(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "rename-returning-primary", "-k", "interface_names")
    results, case = run.results(), "interface_names_kept"
    assert _check(results, "failover_negotiated", case).startswith("PASS")
    # The watcher renamed the boot-time primary vf1 and renames each returning one (eth2 again) vf2, vf3 ...
    for hop in (1, 2, 3):
        assert _check(results, f"hop{hop}.names_kept", case) == (
            f"FAIL hop{hop}.names_kept: master eth0, standby eth1, primary vf{hop + 1} (the kernel registered the "
            "primary as eth2); before the first migration: master eth0, standby eth1, primary vf1 (given 2 s to "
            "settle)")


def test_boot_case_fails_when_the_primary_goes_after_boot(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "primary-removed-after-boot", "-k", "stays_after_boot")
    results, case = run.results(), "stays_after_boot"
    deleted = _check(results, "primary_not_deleted", case)
    assert re.fullmatch(r"FAIL primary_not_deleted: DEVICE_DELETED primary0 \+\d\.\d\d s after the guest registered "
                        r"its primary eth2 at boot", deleted), deleted
    assert _check(results, "primary_still_enslaved", case).startswith("FAIL primary_still_enslaved: master=eth0")
    assert _check(results, "traffic_on_primary", case) == ("FAIL traffic_on_primary: the last replies travelled on: "
                                                           "standby")
