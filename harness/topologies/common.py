"""What every bed does the same way once it has a source VM, its guest and a test network."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol

from harness import progress
from harness.config import RunConfig
from harness.errors import ConfigError, HarnessError
from harness.guest import ControlChannel, Guest
from harness.logscan import quiet_guest_reset
from harness.migration import DestinationPrimary, MigrationPlan, MigrationResult, migrate
from harness.netns import Addressing, TestNetwork
from harness.sriov.mac_policy import clearing_mac_when_released
from harness.topologies.devices import PRIMARY_ID
from harness.vm import VM, Accel, Device, VMSpec

log = logging.getLogger(__name__)

# How long a destination on another host may go on loading after the source reports completed.
REMOTE_RESUME_TIMEOUT_S = 120.0


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
    paused: bool
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

    def _boot_source(self, launch: Callable[[], VM]) -> None:
        """Start the source with *launch* and, unless the bed is built paused, wait for its guest."""
        started = time.monotonic()
        self.source = launch()
        self.guest = self._guest_of(self.source)
        if not self.paused:
            self._wait_booted(started)

    @property
    def guest_accel(self) -> Accel:
        """What runs the failover guest (a nested bed's L2 may differ from its L1s)."""
        return self.accel

    def resume(self) -> None:
        """Start a source built paused and wait for its guest agent."""
        started = time.monotonic()
        self.source.qmp.execute("cont")
        self._wait_booted(started)

    def boot_deadline_s(self) -> float:
        """How long the guest may take to boot (a topology whose guest's accelerator varies says so)."""
        return self.boot_timeout_s

    def _wait_booted(self, started: float) -> None:
        """Wait for the guest agent; :attr:`boot_s` counts from *started* (QEMU launch, or ``cont``)."""
        with progress.step(f"bed {self.tag}: booting the guest ({self.guest_accel})"):
            self.guest.channel.wait_ready(self.boot_deadline_s())
        self.boot_s = time.monotonic() - started

    def _drive_migration(self, destination: VM, uri: str, plan: MigrationPlan,
                         saved_to: Path | None = None) -> MigrationResult:
        """Migrate the source to *destination* over *uri* as *plan* says, within the configured deadlines
        (through the file *saved_to*, which *uri* names, for a plan ``through_file``)."""
        limits = self.config.thresholds
        with progress.step(f"bed {self.tag}: migrating {self.source.name} to {destination.name}") as step:
            result = migrate(self.source, destination, uri, deadline_s=limits.migration_deadline_s,
                             wait_unplug_deadline_s=plan.wait_unplug_deadline_s or limits.wait_unplug_deadline_s,
                             on_status=plan.on_status, max_bandwidth=plan.max_bandwidth,
                             capabilities=plan.capabilities, parameters=plan.parameters, saved_to=saved_to)
            step.result = result.status
        return result

    def unplug_primary(self, timeout: float = 30.0) -> None:
        """``device_del`` the source's primary and wait until the guest ejected it (``DEVICE_DELETED``)."""
        self._device_del(PRIMARY_ID, timeout)

    def remove_device(self, device_id: str, timeout: float = 30.0) -> None:
        """``device_del`` *device_id* for good: once the guest ejected it, the source's spec (which
        destinations are built from) no longer has it."""
        self._device_del(device_id, timeout)
        spec = self.source.spec
        self.source.spec = replace(spec, devices=tuple(d for d in spec.devices if d.id != device_id))

    def _device_del(self, device_id: str, timeout: float) -> None:
        qmp = self.source.qmp
        mark = qmp.mark()
        qmp.execute("device_del", {"id": device_id})
        qmp.next_event("DEVICE_DELETED", timeout, after=mark, match=lambda e: e.data.get("device") == device_id)

    def plug_primary(self) -> None:
        """``device_add`` the source's primary again, as it was given on the command line."""
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

    def emulation_fault(self, failure: BaseException) -> str | None:
        """Why *failure* is the emulated hardware's fault, not the system under test's, if it is
        (the flake policy retries such a case once): never, unless a topology knows better."""
        return None

    def save_guest_log(self, path: Path) -> None:
        """Evidence of a failed case: the guest's whole kernel log, or why it could not be read."""
        try:
            text = self.guest.dmesg(timeout=5.0)
        except (HarnessError, AttributeError) as e:  # AttributeError: the guest never got that far
            text = f"(the guest's kernel log could not be read: {e})\n"
        path.write_text(text)


class Carrier(Protocol):
    """What carries a remote QEMU's QMP or agent to the harness (a relay, an SSH tunnel)."""

    def close(self) -> None: ...


class RemoteBedCommon(BedCommon):
    """Mixed into the beds whose QEMUs run on other hosts (L1s, lab hosts): migrating between them,
    and retiring a QEMU with what carried its QMP and agent."""

    # Per VM name: what carries its QMP and agent (each bed fills it as it launches a VM).
    _carriers: dict[str, list[Carrier]]
    # Per host: its clock's (offset, uncertainty) against the harness's, in seconds.
    _clock_offsets: dict[str, tuple[float, float]]
    _dest_count: int

    def devices(self) -> tuple[Device, ...]:
        return self.source.spec.devices

    def _next_destination_name(self) -> str:
        self._dest_count += 1
        return "dst" if self._dest_count == 1 else f"dst{self._dest_count}"

    def _clock_facts(self) -> dict[str, object]:
        """``run.<host>_clock_offset_ms``: how far each host's clock (its QEMU's QMP events) is from ours."""
        return {f"run.{name}_clock_offset_ms": f"{offset * 1000:.1f} ± {uncertainty * 1000:.1f}"
                for name, (offset, uncertainty) in self._clock_offsets.items()}

    def _migrate_across(self, destination: VM, uri: str, plan: MigrationPlan) -> MigrationResult:
        """Migrate to *destination* on another host over *uri*; on success it becomes the source.

        A destination elsewhere (under nested TCG: for seconds) goes on loading after the
        source reports ``completed``, and what reaches the guest's serial port before it
        resumes is lost: the control channel moves there once it reported ``RESUME``.
        """
        if plan.through_file:  # the destination's host cannot read a file the source's host wrote
            raise ConfigError(f"bed {self.tag}: a migration through a file needs source and destination on one host")
        source = self.source
        if self.config.vf_mac_policy == "cleared":
            plan = clearing_mac_when_released(plan, partial(self._set_vf_macs, source, cleared=True))
        mark = destination.qmp.mark()
        result = self._drive_migration(destination, uri, plan)
        if result.status != "completed":
            self._set_vf_macs(source, cleared=False)  # QEMU plugs the primary back on the source
            self._retire(destination)
            return result
        destination.qmp.next_event("RESUME", REMOTE_RESUME_TIMEOUT_S, after=mark)
        self.guest.channel.retarget(destination.paths.control_socket, destination.is_running)
        old, self.source = self.source, destination
        self._retire(old)
        return result

    def _set_vf_macs(self, vm: VM, *, cleared: bool) -> None:
        """Clear the MACs of the VFs *vm*'s host passes to its guest (from the PF), or give them their
        failover MACs back; nothing if they are already so (:mod:`harness.sriov.mac_policy`, ``cleared``)."""
        raise NotImplementedError

    def _qemu_outputs(self) -> dict[str, str]:
        """What each guest QEMU of the bed printed, by name (evidence for :meth:`emulation_fault`)."""
        return {f"{vm.name}'s QEMU": "\n".join(vm.messages()) for vm in self.vms}

    def _quiet_resets(self, vms: Iterable[VM] | None = None) -> dict[str, str]:
        """Each of *vms* (default: the bed's guest QEMUs) whose guest reset itself with nothing on its
        console (evidence for :meth:`emulation_fault`; see :func:`~harness.logscan.quiet_guest_reset`)."""
        found = {}
        for vm in self.vms if vms is None else vms:
            transcript, console = vm.paths.qmp_transcript, vm.paths.console_log
            if transcript.is_file() and (reset := quiet_guest_reset(
                    transcript.read_text(errors="replace"),
                    console.read_text(errors="replace") if console.is_file() else "")) is not None:
                found[vm.name] = reset
        return found

    def _retire_all(self) -> None:
        """Close the guest's channel and retire every QEMU of the bed, last started first (teardown)."""
        if hasattr(self, "guest"):
            self.guest.channel.close()
        for vm in reversed(self.vms):
            self._retire(vm)

    def _retire(self, vm: VM) -> None:
        """Shut *vm* down and close what carried it. Idempotent; a host that died took its QEMU with it."""
        try:
            vm.shutdown()
        except HarnessError as e:
            log.warning("bed %s: shutting down %s: %s", self.tag, vm.name, e)
        for carrier in self._carriers.pop(vm.name, []):
            carrier.close()
