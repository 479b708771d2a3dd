"""The guest's failover interfaces as users' configurations see them: their names, and a primary that stays.

Network configurations name interfaces. net_failover's master and standby are
the same netdevs for the guest's whole life; the primary is a new PCI device
after every migration, named again by the guest (the kernel's lowest free
``ethN``, or a udev rule). Before Linux 8065a779f17e ("failover: allow name
change on IFF_UP slave interfaces", 5.1), udev's rename of a hot-plugged primary
could lose the race with net_failover opening it (an up interface could not be
renamed), and the primary kept the kernel's name, which a configuration written
for its usual name missed. The contract checked here: the names the guest had
before the first migration are the names it has after each one (a rename by the
guest's own rules may take a moment: it is waited for).

At boot, QEMU plugs the primary while the guest's PCIe hotplug driver sets up
its slots. Before QEMU df72184ec1 ("pcie: don't set link state active if the
slot is empty", 6.0) an empty slot reported its link active: the guest's
pciehp probed it, found nothing and powered the slot off while QEMU plugged
the primary, and the primary vanished a moment after the guest registered it.
The case boots a guest from power-on with native PCIe hotplug and checks the
primary is still there, enslaved and carrying traffic a few seconds later.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from harness.checks import CheckList
from harness.config import RunConfig
from harness.errors import DeadlineExceeded
from harness.guest import FailoverView, Guest, GuestLink, failover_link_events
from harness.metrics import PRIMARY
from harness.scenarios import observe_traffic
from harness.topologies import HOTPLUG_STYLE, PRIMARY_ID, FailoverBed
from harness.verdicts import check_failover_ready

NAMING_HOPS = 3
# How long a returning primary may take to get its usual name: a udev rule renames it
# a fraction of a second after the kernel registered it under its own name.
NAME_SETTLE_S = 2.0
# How long the primary plugged at boot must stay once the guest registered it: the race
# df72184ec1 fixed took it away within about a second of the guest's registration.
BOOT_OBSERVATION_S = 3.0


def _names(view: FailoverView) -> str:
    def name(role: str, link: GuestLink | None) -> str:
        return f"{role} {link.name if link else 'none'}"

    return ", ".join((name("master", view.master), name("standby", view.standby), name("primary", view.primary)))


def _settled_names(guest: Guest, expected: str, deadline_s: float) -> str:
    """The guest's failover names once they read *expected*, or as they read at the deadline."""
    deadline = time.monotonic() + deadline_s
    while (names := _names(guest.failover())) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return names


def _registered_as(guest: Guest) -> str:
    """The name the guest's kernel gave its latest primary as net_failover registered it."""
    lines = guest.channel.run("dmesg | grep 'failover primary slave'").output
    names = [iface for _, kind, iface in failover_link_events(lines) if kind == "primary-registered"]
    return names[-1] if names else "nothing"


def test_interface_names_kept_across_migrations(
    failover_bed: FailoverBed, harness_config: RunConfig, record_property: Any
) -> None:
    """Back and forth NAMING_HOPS times: the master, the standby and the returning primary keep their names."""
    bed, checks, limits = failover_bed, CheckList(record_property), harness_config.thresholds
    check_failover_ready(bed, harness_config, checks)
    before = _names(bed.guest.failover())
    record_property("run.interface_names", before)
    for hop in range(1, NAMING_HOPS + 1):
        scope = checks.scope(f"hop{hop}")
        result = bed.migrate(bed.start_destination())
        if result.status != "completed":  # the guest stayed where it was: no new primary to name
            scope.check("names_kept", False, f"not judged: the migration ended {result.status} ({result.states})")
            break
        bed.guest.wait_primary_active(limits.primary_restore_deadline_s)
        after = _settled_names(bed.guest, before, NAME_SETTLE_S)
        settle = "" if after == before else f" (given {NAME_SETTLE_S:g} s to settle)"
        scope.check("names_kept", after == before,
                    f"{after} (the kernel registered the primary as {_registered_as(bed.guest)}); "
                    f"before the first migration: {before}{settle}")
    checks.verify()


@pytest.mark.bed_needs(HOTPLUG_STYLE)
@pytest.mark.parametrize("failover_bed", [{"paused": True, "hotplug": "native"}], indirect=True, ids=["native"])
def test_primary_stays_after_boot(
    failover_bed: FailoverBed, harness_config: RunConfig, test_artifacts: Path, record_property: Any
) -> None:
    """From power-on: the primary QEMU plugs at negotiation is still there, enslaved and in use, seconds later."""
    bed, checks = failover_bed, CheckList(record_property)
    qmp = bed.source.qmp
    bed.resume()
    check_failover_ready(bed, harness_config, checks)
    sync, kernel_log = bed.guest.clock_sync()
    registered = [(uptime + sync.offset_s, iface) for uptime, kind, iface in failover_link_events(kernel_log)
                  if kind == "primary-registered"]
    since = registered[0][0] if registered else time.time()
    window_end = since + BOOT_OBSERVATION_S

    def until_window_end() -> None:  # ends early if QEMU deletes the primary
        with contextlib.suppress(DeadlineExceeded):
            qmp.next_event("DEVICE_DELETED", max(0.0, window_end - time.time()),
                           match=lambda e: e.data.get("device") == PRIMARY_ID)

    seen = observe_traffic(bed, harness_config, test_artifacts, until_window_end)
    observed_s = time.time() - since
    when = (f"the guest registered its primary {registered[0][1]} at boot" if registered
            else "the guest's registration of its primary was not in its kernel log: counted from its readiness")
    deleted = [e for e in qmp.events if e.name == "DEVICE_DELETED" and e.data.get("device") == PRIMARY_ID]
    checks.check("primary_not_deleted", not deleted,
                 f"DEVICE_DELETED {PRIMARY_ID} {deleted[0].ts - since:+.2f} s after {when}" if deleted
                 else f"no DEVICE_DELETED {PRIMARY_ID} from power-on to {observed_s:.1f} s after {when} "
                 f"(the window: {BOOT_OBSERVATION_S:g} s)")
    view = bed.guest.failover()
    gone = [g for g in seen.timeline.guest_events if g.kind == "primary-unregistered"]
    checks.check("primary_still_enslaved", view.primary_active and not gone,
                 f"{view.describe()} {observed_s:.1f} s after {when}"
                 + "".join(f"; the guest unregistered {g.detail} {g.t - since:+.2f} s after" for g in gone))
    checks.check("traffic_on_primary", seen.final_path == PRIMARY,
                 f"the last replies travelled on: {seen.final_path or 'no attributed reply'}")
    checks.verify()
