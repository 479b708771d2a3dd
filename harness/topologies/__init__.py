"""Failover beds: what every topology hands a test.

A bed is a running source VM whose guest negotiated failover with the primary
enslaved, a way to start destinations, the traffic peer, and the control
channel. Tests use only what this module exports (:class:`FailoverBed`, the
capabilities, the failover devices' ids), never a topology's internals.

Each topology is a module of its own that imports no sibling (:data:`TOPOLOGIES`);
what several share lives beside them: ``common`` (what every bed does alike),
``devices`` (the failover devices), ``vfio`` (a guest whose primaries are VFs
passed through, on a hypervisor host), ``emulated_nesting`` (faults of a
hypervisor under TCG).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from harness.guest import Guest
from harness.migration import PLAIN_MIGRATION, DestinationPrimary, MigrationPlan, MigrationResult
from harness.netns import Addressing
from harness.topologies.devices import MISMATCHED_MAC, PRIMARY2_ID, PRIMARY_ID, STANDBY2_ID, STANDBY_ID
from harness.traffic.probe import PathRecorder
from harness.vm import VM, Accel, Device

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.image import GuestImage

__all__ = ["ALL_CAPABILITIES", "COMMAND_LINE_PAIRING", "DEGRADED_DESTINATION", "EMULATED_PRIMARY", "HOTPLUG_STYLE",
           "MISMATCHED_MAC", "PRIMARY2_ID", "PRIMARY_ID", "SAVE_RESTORE", "SECOND_PAIR", "STANDBY2_ID", "STANDBY_ID",
           "TOPOLOGIES", "BedClass", "FailoverBed", "bed_class"]

# What a case may need beyond "migrate a failover guest" (marker ``bed_needs``);
# a topology lists what it offers and the others' cases are skipped with the reason.
EMULATED_PRIMARY = "emulated-primary"  # the primary is an emulated NIC the harness configures (option ROM)
COMMAND_LINE_PAIRING = "command-line-pairing"  # the case chooses the devices and their order on QEMU's command line
HOTPLUG_STYLE = "hotplug-style"  # ACPI or native PCIe hotplug, chosen per case
DEGRADED_DESTINATION = "degraded-destination"  # a destination without (or with a broken) primary
SECOND_PAIR = "second-pair"  # a second failover pair in the same guest
SAVE_RESTORE = "save-restore"  # a migration through a file (MigrationPlan.through_file): both QEMUs on one host
ALL_CAPABILITIES = frozenset({EMULATED_PRIMARY, COMMAND_LINE_PAIRING, HOTPLUG_STYLE, DEGRADED_DESTINATION,
                              SECOND_PAIR, SAVE_RESTORE})


class FailoverBed(Protocol):
    capabilities: ClassVar[frozenset[str]]
    addressing: Addressing
    source: VM
    guest: Guest

    def build(self) -> FailoverBed:
        """Create the bed and boot the source (the fixture does this unless told ``"build": False``)."""
        ...

    def resume(self) -> None:
        """Start a source built paused (bed option ``paused``) and wait for its guest."""
        ...

    def facts(self) -> dict[str, object]:
        """What the bed measured or decided while building (``run.*`` properties; None: not known)."""
        ...

    def devices(self) -> tuple[Device, ...]:
        """The source's failover devices (root ports, standby, primary), as given to QEMU."""
        ...

    def start_destination(self, *, primary: DestinationPrimary = "same") -> VM: ...

    def migrate(self, destination: VM, plan: MigrationPlan = PLAIN_MIGRATION) -> MigrationResult: ...

    def expected_log_lines(self) -> list[str]:
        """Regexes of what QEMU prints for this bed when all is well (the log scan allows them)."""
        ...

    def qemu_messages(self) -> list[str]:
        """Errors and warnings of every QEMU this bed started."""
        ...

    def emulation_fault(self, failure: BaseException) -> str | None:
        """Why *failure* (of a case on this bed, torn down) is the emulation's fault, if it is."""
        ...

    def unplug_primary(self, timeout: float = 30.0) -> None:
        """Hot-unplug the source's primary (``device_del``) and wait for the guest's eject."""
        ...

    def plug_primary(self) -> None:
        """Hot-plug the source's primary again, as configured."""
        ...

    def remove_device(self, device_id: str, timeout: float = 30.0) -> None:
        """Hot-unplug *device_id* from the source for good: ``device_del``, the guest's eject, and the
        source's configuration without it, so destinations started later match (as a management
        layer keeps its domain definition)."""
        ...

    def pair_addressing(self, pair: int) -> Addressing:
        """Guest address and failover MAC of failover pair *pair* (1, or 2 where the bed has two)."""
        ...

    def path_capture(self, log_path: Path, pair: int = 1) -> PathRecorder:
        """Start recording which data path (``primary``/``standby``) carries each probe reply of *pair*.

        The capture is starting when this returns: :meth:`PathCapture.wait_ready` before relying on it.
        """
        ...

    def peer_exec_prefix(self) -> list[str]: ...

    def peer_interface(self) -> str: ...

    def peer_mac(self) -> str: ...

    def save_guest_log(self, path: Path) -> None:
        """Evidence of a failed case: the guest's whole kernel log, or why it could not be read."""
        ...

    def peak_rss_mib(self) -> float | None:
        """The largest peak resident memory of this bed's QEMUs (known once they are shut down)."""
        ...

    def teardown(self) -> None: ...


class BedClass(Protocol):
    """A topology's bed class: what it offers, and its constructor (the topology's own keywords in *options*)."""

    capabilities: frozenset[str]

    def __call__(self, config: RunConfig, image: GuestImage, accel: Accel, tag: str, *, run_dir: Path,
                 artifacts_dir: Path, **options: Any) -> FailoverBed: ...


# Each topology's bed class, imported when first asked for: a flat run never loads the host
# topology's lab modules (paramiko), nor a nested run the lab's.
TOPOLOGIES: dict[str, str] = {
    "flat": "harness.topologies.flat:FlatBed",
    "nested": "harness.topologies.nested:NestedBed",
    "host": "harness.topologies.host:HostBed",
}


def bed_class(topology: str) -> BedClass:
    """The bed class of *topology* (a key of :data:`TOPOLOGIES`), its module imported now."""
    module, _, name = TOPOLOGIES[topology].partition(":")
    return cast(BedClass, getattr(importlib.import_module(module), name))
