"""Failover beds: what every topology hands a test.

A bed is a running source VM whose guest negotiated failover with the primary
enslaved, a way to start destinations, the traffic peer, and the control
channel. Tests use only :class:`FailoverBed`, never a topology's internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol

from harness.guest import Guest
from harness.migration import PLAIN_MIGRATION, DestinationPrimary, MigrationPlan, MigrationResult
from harness.netns import Addressing
from harness.traffic.probe import PathRecorder
from harness.vm import VM, Device

# What a case may need beyond "migrate a failover guest" (marker ``bed_needs``);
# a topology lists what it offers and the others' cases are skipped with the reason.
EMULATED_PRIMARY = "emulated-primary"  # the primary is an emulated NIC the harness configures (option ROM)
COMMAND_LINE_PAIRING = "command-line-pairing"  # the case chooses the devices and their order on QEMU's command line
HOTPLUG_STYLE = "hotplug-style"  # ACPI or native PCIe hotplug, chosen per case
DEGRADED_DESTINATION = "degraded-destination"  # a destination without (or with a broken) primary
SECOND_PAIR = "second-pair"  # a second failover pair in the same guest
ALL_CAPABILITIES = frozenset({EMULATED_PRIMARY, COMMAND_LINE_PAIRING, HOTPLUG_STYLE, DEGRADED_DESTINATION,
                              SECOND_PAIR})


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

    def teardown(self) -> None: ...
