"""A failover guest whose primaries are SR-IOV VFs passed through with VFIO, on a hypervisor host
(an L1 of the nested topology, a lab host of the host topology): its QEMU spec, the kernel it
boots, and telling its standby's replies from its VF's (both leave through the same NIC).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from harness import progress
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.image import GuestImage, uncompressed_kernel
from harness.kernel import KernelBuilder, kernel_release
from harness.metrics import STANDBY
from harness.netns import Addressing
from harness.sriov.claims import VirtualFunction
from harness.timeline import PathSeen
from harness.topologies.devices import PRIMARY2_ID, PRIMARY_ID, failover_devices, kernel_append, second_pair_devices
from harness.traffic.probe import PathCapture
from harness.vm import Accel, Device, TapNetdev, VMSpec

# In the hypervisor: the tap of the guest's (first) standby.
L2_STANDBY_TAP = "l2sby"
# Kernel arguments that cut the L2 guest's boot under nested TCG without changing
# what failover does: no crypto self-tests, no read-only remapping and its W+X
# scan, no speculation mitigations, no TSC and timer sanity checks.
L2_FAST_BOOT_ARGS = "cryptomgr.notests rodata=off mitigations=off tsc=reliable no_timer_check"
# SeaBIOS probes and waits; qboot only loads the kernel.
QBOOT = "/usr/share/qemu/qboot.rom"
# The drivers a user's L2 kernel (--guest-kernel) loads: failover and the VF (the image carries more).
L2_MODULES = "virtio_pci,failover,net_failover,virtio_net,igbvf"
# A destination's primary QEMU cannot create (a degraded destination): no such PCI function in L1.
MISSING_VF_ADDRESS = "0000:ff:1f.7"
# The primaries that are VFs in L2, in pair order: pair N's primary is the L1's VF N-1.
VF_OF_PRIMARY = (PRIMARY_ID, PRIMARY2_ID)


def standby_tap(pair: int) -> str:
    """In L1: the tap of failover pair *pair*'s virtio-net standby."""
    return L2_STANDBY_TAP if pair == 1 else f"{L2_STANDBY_TAP}{pair}"


def l2_spec(name: str, qemu_binary: str, image: GuestImage, addressing: Addressing,
            vfs: tuple[VirtualFunction, ...], *, kernel: Path, modules: str, accel: Accel = "tcg",
            memory_mib: int = 512, paused: bool = False, extra_args: tuple[str, ...] = ()) -> VMSpec:
    """The failover guest's QEMU spec inside an L1: a failover pair per VF in *vfs* (one or two),
    each a virtio-net standby on its own tap with the VF as its primary, *kernel* booted through
    qboot with the image's initramfs loading *modules* (``none``: all built in). Pure."""
    second = addressing.second_pair() if len(vfs) == 2 else None
    devices = failover_devices(addressing.failover_mac)
    netdevs = [TapNetdev("hn0", standby_tap(1))]
    if second is not None:
        devices += second_pair_devices(second.failover_mac)
        netdevs.append(TapNetdev("hn2", standby_tap(2)))
    # The emulated primaries become VFs passed through: no netdev (the VF is the NIC), no MAC or
    # ROM of QEMU's (the PF set the VF's MAC).
    devices = tuple(Device("vfio-pci", d.id, d.without("netdev", "mac", "romfile").props)
                    if d.id in VF_OF_PRIMARY else d for d in devices)
    spec = VMSpec(
        name=name, qemu_binary=qemu_binary, accel=accel, kernel=kernel, initrd=image.initrd,
        append=f"{kernel_append(addressing, second)} {L2_FAST_BOOT_ARGS} harness.modules={modules}",
        memory_mib=memory_mib, netdevs=tuple(netdevs), devices=devices, paused=paused,
        extra_args=("-bios", QBOOT, *extra_args),
    )
    return with_vfs(spec, vfs)


def with_vfs(spec: VMSpec, vfs: tuple[VirtualFunction, ...]) -> VMSpec:
    """*spec* with *vfs* as its primaries, in pair order (a destination in another L1 passes that L1's VFs)."""
    hosts = {primary: vf.address for primary, vf in zip(VF_OF_PRIMARY, vfs, strict=False)}
    return replace(spec, devices=tuple(d.with_props(host=hosts[d.id]) if d.id in hosts else d
                                       for d in spec.devices))


def failover_guest_kernel(config: RunConfig, image: GuestImage) -> tuple[Path, str, str | None]:
    """What a guest on a hypervisor host (an L1, a lab host) boots through qboot: the kernel, the
    modules its init loads, the kernel's release (None: not known). The user's (``--guest-kernel``)
    with the failover and VF drivers from the image, else the small kernel with everything built in
    (Debian's generic one spends minutes initialising under nested TCG)."""
    if config.guest_kernel is not None:  # uncompressed: qboot boots it through PVH
        return uncompressed_kernel(image), L2_MODULES, image.kernel_release
    with progress.step("the small guest kernel (built once from Debian's source, then cached)"):
        vmlinux = KernelBuilder(config.cache_dir).get()
    return vmlinux, "none", kernel_release(vmlinux)


def attribute_paths(seen_in_l0: list[PathSeen], standby_seqs: set[int]) -> list[PathSeen]:
    """Replies as seen in L0 (every one, labelled the VF's path), relabelled standby where an L1
    saw them arrive from the standby's tap. Pure."""
    return [replace(seen, path=STANDBY) if seen.seq in standby_seqs else seen for seen in seen_in_l0]


class StandbyCapture(Protocol):
    """A capture on a hypervisor (an L1, a lab host) of the replies the guest sent through its standby."""

    @property
    def host(self) -> HasName: ...

    def ready(self) -> bool: ...

    def errors(self) -> str: ...

    def request_stop(self) -> None: ...

    def standby_seqs(self) -> set[int]: ...


class HasName(Protocol):
    @property  # read-only: an L1Host's name is a property
    def name(self) -> str: ...


# A hypervisor's capture sees each reply leave the standby's tap before the peer's sees it arrive, but
# on a busy host (an L1 under TCG) it may still hold a backlog when told to stop, and loses what it
# has not read: those last replies would count as the VF's. Seen on a lab host under TCG: the last
# 0.54 s of a destination's standby replies, which failed guest_on_standby. So the hypervisors'
# captures stop this long after the peer's.
HYPERVISOR_CAPTURE_DRAIN_S = 2.0


class HypervisorPathCapture:
    """Path attribution where the hypervisor tells the standby's replies apart: every reply of the
    guest is seen where the peer is (nested: in L0 on an L1's igb tap), whichever path it took;
    those a hypervisor saw come from the standby's tap took the standby."""

    def __init__(self, l0: PathCapture, l1: Sequence[StandbyCapture]) -> None:
        self.l0, self.l1 = l0, l1
        self._stop_requested = False

    @classmethod
    def start(cls, l0: PathCapture, starters: Iterable[Callable[[], StandbyCapture]]) -> HypervisorPathCapture:
        """With *l0* running, start a standby capture per hypervisor; if one fails, stop them all."""
        l1: list[StandbyCapture] = []
        try:
            for start in starters:
                l1.append(start())
        except BaseException:
            cls(l0, l1).request_stop()
            l0.stop()
            raise
        return cls(l0, l1)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        self.l0.wait_ready(timeout)
        while not all(capture.ready() for capture in self.l1):
            if time.monotonic() > deadline:
                said = "; ".join(f"{c.host.name}: {c.errors() or 'nothing'}" for c in self.l1 if not c.ready())
                self.request_stop()
                raise HarnessError(f"the path capture in L1 did not start within {timeout:.0f} s ({said})")
            time.sleep(0.5)

    def request_stop(self) -> None:
        """Stop the peer's capture, and the hypervisors' :data:`HYPERVISOR_CAPTURE_DRAIN_S` later (once)."""
        if self._stop_requested:
            return
        self._stop_requested = True
        self.l0.request_stop()
        if self.l1:
            time.sleep(HYPERVISOR_CAPTURE_DRAIN_S)
        for capture in self.l1:
            capture.request_stop()

    def result(self) -> list[PathSeen]:
        return attribute_paths(self.l0.result(), set().union(*(capture.standby_seqs() for capture in self.l1)))
