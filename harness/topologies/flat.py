"""The flat topology: one host, emulated primary, everything in test namespaces.

::

    peer ns: peer0 ──veth── bridge ns: br0 ─┬─ src-sby  (source standby, virtio-net failover=on)
                                            ├─ src-pri  (source primary, e1000e)
                                            ├─ dst-sby  (destination standby)
                                            └─ dst-pri  (destination primary)

QEMU runs inside the bridge namespace (it opens its taps there); the
migration stream is a unix socket in the test's run directory.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.config import RunConfig
from harness.guest import ControlChannel, Guest
from harness.image import GuestImage
from harness.metrics import PRIMARY, STANDBY
from harness.migration import MigrationResult, migrate
from harness.netns import Addressing, TestNetwork
from harness.traffic.probe import PathCapture
from harness.vm import VM, Accel, Device, TapNetdev, VMPaths, VMSpec

log = logging.getLogger(__name__)

# q35 hot-plugs through ACPI by default (since QEMU 6.1); this selects native PCIe
# hotplug (the guest's pciehp, with its ~5 s attention-button delay) instead.
NATIVE_HOTPLUG_ARGS = ("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off")
STANDBY_ID = "standby0"
PRIMARY_ID = "primary0"
BOOT_TIMEOUT_S = 120.0


def failover_devices(mac: str, *, primary_rom: bool = False) -> tuple[Device, ...]:
    """Root ports, standby and primary, in the order QEMU needs (standby first, else never hidden)."""
    # romfile="": with an option ROM the destination refuses the stream
    # ("Unknown ramblock .../e1000e.rom"), a QEMU bug still present in 10.0;
    # *primary_rom* keeps the ROM, for the case that documents that bug.
    primary = Device.of("e1000e", PRIMARY_ID, netdev="hn1", mac=mac, bus="rp1",
                        failover_pair_id=STANDBY_ID, romfile="")
    return (
        Device.of("pcie-root-port", "rp0", bus="pcie.0", chassis=1, addr="0x2"),
        Device.of("pcie-root-port", "rp1", bus="pcie.0", chassis=2, addr="0x3"),
        Device.of("virtio-net-pci", STANDBY_ID, netdev="hn0", mac=mac, bus="rp0", failover=True),
        primary.without("romfile") if primary_rom else primary,
    )


def kernel_append(addressing: Addressing) -> str:
    # ipv6.disable=1: the test network is IPv4, and with IPv6 each failover slave
    # runs its own DAD and MLD: frames on the data paths that are not failover's.
    return (f"console=ttyS0 panic=-1 ipv6.disable=1 harness.mac={addressing.failover_mac} "
            f"harness.addr={addressing.guest_ip}/{addressing.prefix_len}")


@dataclass(eq=False)  # identity semantics: beds are tracked in a set for atexit cleanup
class FlatBed:
    """A failover bed on the flat topology; :meth:`teardown` removes all of it (idempotent)."""

    config: RunConfig
    image: GuestImage
    accel: Accel
    tag: str
    run_dir: Path
    artifacts_dir: Path
    addressing: Addressing = field(default_factory=Addressing)
    hotplug: Literal["acpi", "native"] = "acpi"
    primary_rom: bool = False
    paused: bool = False
    network: TestNetwork = field(init=False)
    vms: list[VM] = field(default_factory=list, init=False)
    source: VM = field(init=False)
    guest: Guest = field(init=False)
    boot_s: float | None = field(default=None, init=False)
    _dest_count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.network = TestNetwork(self.tag, self.addressing)

    # -- building ---------------------------------------------------------

    def build(self) -> FlatBed:
        """Create the network and boot the source until its guest agent answers.

        With :attr:`paused`, QEMU starts stopped (``-S``) and :meth:`resume` boots it.
        """
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            self.network.create()
            started = time.monotonic()
            spec = self._spec("src")
            self.source = self._launch(spec)
            channel = ControlChannel(self.source.paths.control_socket, self.artifacts_dir / "control.log")
            self.guest = Guest(channel, self.addressing.failover_mac)
            if not self.paused:
                channel.wait_ready(BOOT_TIMEOUT_S)
                self.boot_s = time.monotonic() - started
        except BaseException:
            self.teardown()
            raise
        return self

    def resume(self) -> None:
        """Start a source built paused and wait for its guest agent."""
        assert self.source.qmp is not None
        started = time.monotonic()
        self.source.qmp.execute("cont")
        self.guest.channel.wait_ready(BOOT_TIMEOUT_S)
        self.boot_s = time.monotonic() - started

    def _spec(self, name: str) -> VMSpec:
        netdevs = (TapNetdev("hn0", self.network.add_tap(f"{name}-sby")),
                   TapNetdev("hn1", self.network.add_tap(f"{name}-pri")))
        return VMSpec(
            name=name,
            qemu_binary=self.config.qemu_binary,
            accel=self.accel,
            kernel=self.image.kernel,
            initrd=self.image.initrd,
            append=kernel_append(self.addressing),
            memory_mib=self.config.guest_memory_mib,
            netdevs=netdevs,
            devices=failover_devices(self.addressing.failover_mac, primary_rom=self.primary_rom),
            paused=self.paused,
            extra_args=NATIVE_HOTPLUG_ARGS if self.hotplug == "native" else (),
        )

    def _launch(self, spec: VMSpec) -> VM:
        vm = VM(spec, VMPaths.for_vm(spec.name, self.run_dir, self.artifacts_dir),
                launcher_prefix=self.network.bridge_ns.exec_prefix())
        self.vms.append(vm)
        return vm.launch()

    def start_destination(self) -> VM:
        """Start a destination QEMU (``-incoming defer``) on its own taps."""
        self._dest_count += 1
        name = "dst" if self._dest_count == 1 else f"dst{self._dest_count}"
        spec = self.source.spec.as_destination(name, self._spec(name).netdevs)
        return self._launch(spec)

    def migrate(self, destination: VM) -> MigrationResult:
        """Migrate the current source to *destination*; on success the destination becomes the source.

        The old source is then shut down, as a real one would be (its QMP events stay readable).
        """
        uri = f"unix:{self.run_dir / f'{destination.name}.mig'}"
        result = migrate(self.source, destination, uri,
                         deadline_s=self.config.thresholds.migration_deadline_s,
                         wait_unplug_deadline_s=self.config.thresholds.wait_unplug_deadline_s)
        if result.status == "completed":
            self.guest.channel.close()
            self.guest.channel.socket_path = destination.paths.control_socket
            old, self.source = self.source, destination
            old.shutdown()
        return result

    # -- the traffic peer and the data paths ---------------------------------

    def path_capture(self, log_path: Path) -> PathCapture:
        """Attribute replies to a path by the tap they left the guest through (any VM's taps)."""
        return PathCapture(self.network.bridge_ns.exec_prefix(), self.addressing.guest_ip,
                           {"*-pri": PRIMARY, "*-sby": STANDBY}, log_path)

    def peer_exec_prefix(self) -> list[str]:
        return self.network.peer_ns.exec_prefix()

    def peer_interface(self) -> str:
        return TestNetwork.PEER_IF

    def peer_mac(self) -> str:
        return self.network.peer_mac()

    # -- teardown ---------------------------------------------------------

    def teardown(self) -> None:
        """Stop every VM, remove namespaces, taps and sockets. Safe to call twice."""
        if hasattr(self, "guest"):
            self.guest.channel.close()
        for vm in reversed(self.vms):
            vm.shutdown()
        self.network.delete()
        shutil.rmtree(self.run_dir, ignore_errors=True)
