"""What every bed does the same way once it has a source VM, its guest and a test network."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from harness import progress
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.guest import ControlChannel, Guest
from harness.migration import DestinationPrimary, MigrationPlan, MigrationResult, migrate
from harness.netns import Addressing, TestNetwork
from harness.vm import VM, Accel, VMSpec

STANDBY_ID = "standby0"
PRIMARY_ID = "primary0"
# The second failover pair (bed option ``pairs=2``).
STANDBY2_ID = "standby1"
PRIMARY2_ID = "primary1"


def degrade_destination(spec: VMSpec, primary: DestinationPrimary, **broken: Any) -> VMSpec:
    """A destination's *spec* without its primary (``absent``), or with a primary whose *broken*
    properties QEMU cannot realize (``unrealizable``: it finds out only when it creates the
    primary, at negotiation). Pure."""
    if primary == "same":
        return spec
    devices = tuple(d for d in spec.devices if d.id != PRIMARY_ID)
    if primary == "unrealizable":
        devices += (next(d for d in spec.devices if d.id == PRIMARY_ID).with_props(**broken),)
    return replace(spec, devices=devices)


class BedCommon:
    """Mixed into the topologies' beds: the primary by hand, the traffic peer, evidence, memory."""

    boot_timeout_s: ClassVar[float]
    config: RunConfig
    tag: str
    artifacts_dir: Path
    accel: Accel
    boot_s: float | None
    addressing: Addressing
    network: TestNetwork
    source: VM
    guest: Guest
    vms: list[VM]

    def _guest_of(self, vm: VM) -> Guest:
        """The guest behind *vm*'s control socket (its transcript: the artifacts' ``control.log``)."""
        channel = ControlChannel(vm.paths.control_socket, self.artifacts_dir / "control.log",
                                 qemu_running=vm.is_running)
        return Guest(channel, self.addressing.failover_mac)

    @property
    def guest_accel(self) -> Accel:
        """What runs the failover guest (a nested bed's L2 may differ from its L1s)."""
        return self.accel

    def resume(self) -> None:
        """Start a source built paused and wait for its guest agent."""
        assert self.source.qmp is not None
        started = time.monotonic()
        self.source.qmp.execute("cont")
        self._wait_booted(started)

    def _wait_booted(self, started: float) -> None:
        """Wait for the guest agent; :attr:`boot_s` counts from *started* (QEMU launch, or ``cont``)."""
        with progress.step(f"bed {self.tag}: booting the guest ({self.guest_accel})"):
            self.guest.channel.wait_ready(self.boot_timeout_s)
        self.boot_s = time.monotonic() - started

    def _drive_migration(self, destination: VM, uri: str, plan: MigrationPlan) -> MigrationResult:
        """Migrate the source to *destination* over *uri* as *plan* says, within the configured deadlines."""
        limits = self.config.thresholds
        with progress.step(f"bed {self.tag}: migrating {self.source.name} to {destination.name}") as step:
            result = migrate(self.source, destination, uri, deadline_s=limits.migration_deadline_s,
                             wait_unplug_deadline_s=plan.wait_unplug_deadline_s or limits.wait_unplug_deadline_s,
                             on_status=plan.on_status, max_bandwidth=plan.max_bandwidth,
                             capabilities=plan.capabilities)
            step.result = result.status
        return result

    def unplug_primary(self, timeout: float = 30.0) -> None:
        """``device_del`` the source's primary and wait until the guest ejected it (``DEVICE_DELETED``)."""
        qmp = self.source.qmp
        assert qmp is not None
        mark = qmp.mark()
        qmp.execute("device_del", {"id": PRIMARY_ID})
        qmp.next_event("DEVICE_DELETED", timeout, after=mark, match=lambda e: e.data.get("device") == PRIMARY_ID)

    def plug_primary(self) -> None:
        """``device_add`` the source's primary again, as it was given on the command line."""
        assert self.source.qmp is not None
        (primary,) = (d for d in self.source.spec.devices if d.id == PRIMARY_ID)
        self.source.qmp.execute("device_add", primary.qmp_arguments())

    def pair_addressing(self, pair: int) -> Addressing:
        """Guest address and failover MAC of failover pair *pair* (1, or 2 where the bed has two)."""
        return self.addressing if pair == 1 else self.addressing.second_pair()

    def peer_exec_prefix(self) -> list[str]:
        return self.network.peer_ns.exec_prefix()

    def peer_interface(self) -> str:
        return TestNetwork.PEER_IF

    def peer_mac(self) -> str:
        return self.network.peer_mac()

    def peak_rss_mib(self) -> float | None:
        """The largest peak resident memory of this bed's QEMUs (known once they are shut down)."""
        peaks = [vm.peak_rss_mib for vm in self.vms if vm.peak_rss_mib is not None]
        return max(peaks) if peaks else None

    def save_guest_log(self, path: Path) -> None:
        """Evidence of a failed case: the guest's whole kernel log, or why it could not be read."""
        try:
            text = self.guest.dmesg(timeout=5.0)
        except (HarnessError, AttributeError) as e:  # AttributeError: the guest never got that far
            text = f"(the guest's kernel log could not be read: {e})\n"
        path.write_text(text)
