"""The flat topology: one host, emulated primary, everything in test namespaces.

::

    peer ns: peer0 ─veth─ bridge ns: br0 ─┬─ src-sw ─veth─ src-nic ─┬─ src-sby  (standby, virtio-net failover=on)
                                          │                         └─ src-pri  (primary, vmxnet3 or e1000e)
                                          └─ dst-sw ─veth─ dst-nic ─┬─ dst-sby
                                                                    └─ dst-pri

Each QEMU is a host of its own: its NIC (``src-nic``) hands every frame for
the VM to both of its taps and learns nothing from them, and the switch
(``br0``) learns which host the VM is on (:meth:`TestNetwork.add_host`).
QEMU runs inside the bridge namespace (it opens its taps there); the
migration stream is a unix socket in the test's run directory.

The emulated primary stands for a VF, whose link is up as soon as its
driver opens it: ``vmxnet3`` by default. With ``e1000e`` (``flat_primary``)
QEMU holds the link down for a 500 ms autonegotiation after the driver's PHY
reset, and the guest's ``net_failover`` stops taking the standby's frames as
soon as it registers the primary, so every migration shows that half second
in its ``primary_coming_up`` phase. (``rtl8139``, link up at once too, was
tried: its 8139cp driver's transmit queue times out on the destination under
iperf3.)
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal

from harness import progress
from harness.config import RunConfig
from harness.errors import ConfigError, HarnessError, VMError
from harness.guest import Guest
from harness.image import GuestImage
from harness.metrics import PRIMARY, STANDBY
from harness.migration import (
    PLAIN_MIGRATION,
    DestinationPrimary,
    MigrationPlan,
    MigrationResult,
    restore_from_file,
    set_capabilities,
    wait_migration_end,
)
from harness.netns import Addressing, TestNetwork
from harness.pairing import explain_qemu_messages, pairing_problems
from harness.snapshot import SnapshotError, SnapshotStore, snapshot_key
from harness.topologies import ALL_CAPABILITIES
from harness.topologies.common import BedCommon, degrade_destination
from harness.topologies.devices import (
    NATIVE_HOTPLUG_ARGS,
    Pairing,
    failover_devices,
    kernel_append,
    second_pair_devices,
)
from harness.traffic.probe import PathCapture
from harness.vm import VM, Accel, Device, TapNetdev, VMPaths, VMSpec

log = logging.getLogger(__name__)

BOOT_TIMEOUT_S = 120.0
# How long a guest being snapshotted may take to enslave its primary after its agent answers.
SNAPSHOT_PRIMARY_WAIT_S = 20.0
# Saving includes failover's wait-unplug: a guest that never ejects would hold it forever.
SNAPSHOT_SAVE_TIMEOUT_S = 60.0

@dataclass(eq=False)  # identity semantics: beds are tracked in a set for atexit cleanup
class FlatBed(BedCommon):
    """A failover bed on the flat topology; :meth:`teardown` removes all of it (idempotent)."""

    capabilities: ClassVar[frozenset[str]] = ALL_CAPABILITIES
    boot_timeout_s: ClassVar[float] = BOOT_TIMEOUT_S

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
    pairing: Pairing = "correct"
    preflight: bool = True
    pairs: Literal[1, 2] = 1
    # Where booted-guest snapshots live; None: every bed boots its guest cold.
    snapshots: SnapshotStore | None = None
    # Another way to boot the same image (e.g. a small built-in kernel through qboot):
    # words added to the kernel command line and to QEMU's arguments.
    extra_append: str = ""
    extra_qemu_args: tuple[str, ...] = ()
    network: TestNetwork = field(init=False)
    vms: list[VM] = field(default_factory=list, init=False)
    source: VM = field(init=False)
    guest: Guest = field(init=False)
    boot_s: float | None = field(default=None, init=False)
    snapshot_restore_s: float | None = field(default=None, init=False)
    snapshot_error: str | None = field(default=None, init=False)
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
            spec = self._spec("src")
            self._preflight(spec)
            self.network.create()
            key = snapshot_key(spec) if self.snapshots is not None and self.restorable else None
            if self.snapshots is not None and key is not None and key not in self.snapshots.failed:
                try:
                    self._restore(spec, self.snapshots, key)
                    return self
                except SnapshotError as e:  # a snapshot never blocks a case: say why, drop it, boot as usual
                    self.snapshot_error = str(e)
                    log.warning("bed %s: %s; booting instead", self.tag, e)
                    self._discard_vms()
                    self.snapshots.drop(key)
            self._boot_source(partial(self._launch, spec))
        except BaseException:
            self.teardown()
            raise
        return self

    @property
    def restorable(self) -> bool:
        """Whether this bed's source can start from a snapshot: a guest that boots (not paused) and migrates."""
        return not self.paused and self.pairing == "correct" and not self.primary_rom

    def _restore(self, spec: VMSpec, store: SnapshotStore, key: str) -> None:
        """Start the source from the snapshot *key* of this configuration, saving it first if there is none."""
        with store.creating(key) as partial:
            if partial is not None:
                self._save_booted(partial)
        started = time.monotonic()
        with progress.step(f"bed {self.tag}: restoring the booted guest {key}"):
            try:
                self.source = self._launch(replace(spec, incoming=True))
                set_capabilities(self.source)
                # One self-announce, at once: QEMU's default five rounds over 1.25 s would
                # point the bridge at the standby again after the harness settled it.
                self.source.qmp.execute("migrate-set-parameters", {"announce-rounds": 1, "announce-initial": 1})
                status = restore_from_file(self.source, store.path(key), BOOT_TIMEOUT_S)
                if status != "completed":
                    raise VMError(f"incoming migration {status}")
                self.guest = self._guest_of(self.source)
                self.guest.channel.wait_ready(BOOT_TIMEOUT_S)
                self._settle_restored()
            except HarnessError as e:
                raise SnapshotError(f"restoring snapshot {store.path(key)} failed: {e}") from e
        self.snapshot_restore_s = time.monotonic() - started

    def _settle_restored(self) -> None:
        """Bring a restored source to where a booted one is: its primary back and enslaved.

        QEMU re-plugs the primary after loading (``FAILOVER_NEGOTIATED``); the
        case starts once the guest has enslaved it, as the snapshot had it.
        """
        if not any(e.name == "FAILOVER_NEGOTIATED" for e in self.source.qmp.events):
            return  # a setup without failover: no primary comes back, the case will judge that
        if not self.guest.wait_primary_active(self.config.thresholds.primary_restore_deadline_s).primary_active:
            log.warning("bed %s: the restored guest's primary is not active yet", self.tag)

    def _discard_vms(self) -> None:
        """Shut down every VM started so far (and remove its taps), so that a cold boot can start afresh.

        Their logs are kept as ``*.discarded`` (evidence, linked from a failed
        case's report) so that the cold-booted source's logs start clean and
        the log scan judges the case, not the failed restore.
        """
        for vm in self.vms:
            vm.shutdown()
            for log_path in (vm.paths.console_log, vm.paths.stderr_log, vm.paths.qmp_transcript):
                if log_path.exists():
                    log_path.rename(log_path.with_name(log_path.name + ".discarded"))
            self.network.remove_host(vm.spec.name)
        self.vms.clear()
        if hasattr(self, "guest"):
            self.guest.channel.close()
            del self.guest

    def _save_booted(self, path: Path) -> None:
        """Boot a guest of this configuration until failover is ready, then save it to *path* (QEMU's own stream)."""
        spec = self._spec("boot")
        vm = self._launch(spec)
        guest = self._guest_of(vm)
        with progress.step(f"bed {self.tag}: booting a guest to snapshot ({self.accel})"):
            guest.channel.wait_ready(BOOT_TIMEOUT_S)
            try:  # negotiated and enslaved, where the setup allows it: restores start from there
                guest.wait_primary_active(SNAPSHOT_PRIMARY_WAIT_S)
            except HarnessError as e:  # a broken setup's guest may never get there: the cases will judge it
                log.warning("bed %s: snapshot taken without an active primary: %s", self.tag, e)
        guest.channel.close()
        with progress.step(f"bed {self.tag}: saving the booted guest"):
            try:
                set_capabilities(vm)
                mark = vm.qmp.mark()
                vm.qmp.execute("migrate", {"uri": f"file:{path}"})
                status = wait_migration_end(vm, mark, SNAPSHOT_SAVE_TIMEOUT_S)
                if status != "completed":
                    raise VMError(f"migration to the file {status}")
            except HarnessError as e:
                raise SnapshotError(f"saving the booted guest failed: {e}") from e
        vm.shutdown()
        self.network.remove_host(spec.name)

    def facts(self) -> dict[str, object]:
        return {"run.boot_s": self.boot_s, "run.snapshot_restore_s": self.snapshot_restore_s,
                "run.snapshot_error": self.snapshot_error, "run.guest_kernel": self.image.kernel_release}

    def devices(self) -> tuple[Device, ...]:
        """The source's failover devices, as given to QEMU."""
        model = self.config.flat_primary
        devices = failover_devices(self.addressing.failover_mac, model=model, primary_rom=self.primary_rom,
                                   pairing=self.pairing)
        if self.pairs == 2:
            devices += second_pair_devices(self.addressing.second_pair().failover_mac, model)
        return devices

    def _preflight(self, spec: VMSpec) -> None:
        """Refuse a pairing QEMU would refuse, in plain words; warn about one the guest would not use."""
        problems = pairing_problems(spec.devices)
        for problem in problems:
            log.warning("failover pairing: %s", problem.plain)
        fatal = [p.plain for p in problems if p.fatal]
        if fatal and self.preflight:
            raise ConfigError("failover pairing: " + " ".join(fatal))

    def _spec(self, name: str) -> VMSpec:
        netdevs: tuple[TapNetdev, ...] = (TapNetdev("hn0", f"{name}-sby"), TapNetdev("hn1", f"{name}-pri"))
        if self.pairs == 2:
            netdevs += (TapNetdev("hn2", f"{name}-sby2"), TapNetdev("hn3", f"{name}-pri2"))
        return VMSpec(
            name=name,
            qemu_binary=self.config.qemu_binary,
            accel=self.accel,
            kernel=self.image.kernel,
            initrd=self.image.initrd,
            append=" ".join(filter(None, (
                kernel_append(self.addressing, self.pair_addressing(2) if self.pairs == 2 else None),
                self.extra_append))),
            memory_mib=self.config.guest_memory_mib,
            netdevs=netdevs,
            devices=self.devices(),
            paused=self.paused,
            extra_args=(NATIVE_HOTPLUG_ARGS if self.hotplug == "native" else ()) + self.extra_qemu_args,
        )

    def _launch(self, spec: VMSpec) -> VM:
        nic = self.network.add_host(spec.name)  # each QEMU stands for a host of its own
        for netdev in spec.netdevs:
            self.network.add_tap(netdev.ifname, nic)
        vm = VM(spec, VMPaths.for_vm(spec.name, self.run_dir, self.artifacts_dir),
                launcher_prefix=self.network.bridge_ns.exec_prefix())
        self.vms.append(vm)
        try:
            return vm.launch()
        except VMError as e:
            explained = explain_qemu_messages(vm.messages())
            if not explained:
                raise
            raise VMError(f"{e}\nIn plain words: " + " ".join(p.plain for p in explained)) from e

    def start_destination(self, *, primary: DestinationPrimary = "same") -> VM:
        """Start a destination QEMU (``-incoming defer``) on its own taps; *primary* may degrade it."""
        self._dest_count += 1
        name = "dst" if self._dest_count == 1 else f"dst{self._dest_count}"
        spec = self.source.spec.as_destination(name, self._spec(name).netdevs)
        return self._launch(degrade_destination(spec, primary, netdev="nonexistent"))

    def migrate(self, destination: VM, plan: MigrationPlan = PLAIN_MIGRATION) -> MigrationResult:
        """Migrate the current source to *destination*; on success the destination becomes the source.

        The old source is then shut down, as a real one would be (its QMP events
        stay readable); after a failure the destination is shut down instead
        and the guest carries on where it was.
        """
        if plan.through_file:  # saved, then restored: both QEMUs run here and see the run directory
            saved = self.run_dir / f"{destination.name}.sav"
            result = self._drive_migration(destination, f"file:{saved}", plan, saved_to=saved)
        else:
            result = self._drive_migration(destination, f"unix:{self.run_dir / f'{destination.name}.mig'}", plan)
        if result.status == "completed":
            self.guest.channel.retarget(destination.paths.control_socket, destination.is_running)
            old, self.source = self.source, destination
            old.shutdown()
            self.network.remove_host(old.spec.name)
        else:
            destination.shutdown()
        return result

    def expected_log_lines(self) -> list[str]:
        """Regexes of what QEMU prints for this bed when all is well (the log scan allows them).

        A primary is hidden until the guest negotiates failover, so at start-up
        QEMU warns that the primary's netdev has no peer.
        """
        props = [dict(d.props) for d in self.devices()]
        netdevs = [str(p["netdev"]) for p in props if "failover_pair_id" in p and "netdev" in p]
        return [rf"warning: netdev {re.escape(n)} has no peer$" for n in netdevs]

    def qemu_messages(self) -> list[str]:
        """Errors and warnings of every QEMU this bed started, in start order."""
        return [line for vm in self.vms for line in vm.messages()]

    # -- the traffic peer and the data paths ---------------------------------

    def path_capture(self, log_path: Path, pair: int = 1) -> PathCapture:
        """Attribute replies to a path by the tap they left the guest through (any VM's taps)."""
        suffix = "" if pair == 1 else str(pair)
        return PathCapture(self.network.bridge_ns.exec_prefix(), self.pair_addressing(pair).guest_ip,
                           {f"*-pri{suffix}": PRIMARY, f"*-sby{suffix}": STANDBY}, log_path)

    # -- teardown ---------------------------------------------------------

    def teardown(self) -> None:
        """Stop every VM, remove namespaces, taps and sockets. Safe to call twice."""
        if hasattr(self, "guest"):
            self.guest.channel.close()
        for vm in reversed(self.vms):
            vm.shutdown()
        self.network.delete()
        shutil.rmtree(self.run_dir, ignore_errors=True)
