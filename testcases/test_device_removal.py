"""The failover pair taken apart by hand: the standby removed first, then the primary or a migration.

QEMU crashed on both orders before (``device_del`` of the standby then of the
primary, fixed by 650181007a in 5.1; the standby removed, then ``migrate``: a
notifier left behind, fixed by 1e157667d7 in 6.1). Whatever QEMU decides then,
it must survive, and a migration must end in a state it reports. The destination
is started as the source is configured then, without the standby (as a management
layer starts it from its current domain definition): its primary, paired with no
standby, is an ordinary NIC there and migrates as one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.checks import CheckList
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.topologies import PRIMARY_ID, STANDBY_ID, FailoverBed
from harness.verdicts import check_failover_ready
from harness.vm import VM

TERMINAL = ("completed", "failed", "cancelled")


def _removed(bed: FailoverBed, device: str, timeout: float) -> tuple[bool, str]:
    """Remove *device* from the source for good (the guest ejects it; later destinations lack it)."""
    try:
        bed.remove_device(device, timeout)
    except HarnessError as e:
        return False, f"device_del {device}: {type(e).__name__}: {e}"
    return True, f"DEVICE_DELETED {device}"


def _survived(vm: VM) -> tuple[bool, str]:
    """*vm*'s QEMU still runs and answers QMP; else how it ended, with what it printed last."""
    if vm.is_running():
        try:
            return True, f"{vm.name}: QEMU runs, status {vm.qmp.execute('query-status')['status']}"
        except HarnessError as e:
            return False, f"{vm.name}: QEMU runs but QMP failed: {e}"
    said = vm.messages()[-3:]
    return False, f"{vm.name}: QEMU {vm.exit_status()}" + (f"; it said: {' | '.join(said)}" if said else "")


@pytest.mark.parametrize("then", [
    "primary-removed",
    # The removed standby's netdev stays configured, with no device on it.
    pytest.param("migrated", marks=pytest.mark.allow_log(r"warning: netdev \w+ has no peer$")),
])
def test_standby_removed_first(failover_bed: FailoverBed, then: str, harness_config: RunConfig, test_artifacts: Path,
                               record_property: Any) -> None:
    """device_del of the standby, then of the primary or a migration: QEMU survives both."""
    bed, checks, limits = failover_bed, CheckList(record_property), harness_config.thresholds
    check_failover_ready(bed, harness_config, checks)
    checks.check("standby_deleted", *_removed(bed, STANDBY_ID, limits.wait_unplug_deadline_s))
    running_on = bed.source
    if then == "primary-removed":
        checks.check("primary_deleted", *_removed(bed, PRIMARY_ID, limits.wait_unplug_deadline_s))
    elif not bed.source.is_running():
        checks.check("migration_ended", False, "not attempted: the source's QEMU is gone")
    else:
        try:
            destination = bed.start_destination()
            result = bed.migrate(destination)
        except HarnessError as e:
            checks.check("migration_ended", False, f"{type(e).__name__}: {e}")
        else:
            said = [line for line in destination.messages() if "error" in line.lower()]
            checks.check("migration_ended", result.status in TERMINAL,
                         f"status {result.status}, states {result.states}"
                         + (f"; the destination said: {' | '.join(said[-2:])}" if said else ""))
            running_on = destination if result.status == "completed" else running_on
    checks.check("qemu_survived", *_survived(running_on))
    checks.verify()
