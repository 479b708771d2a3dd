"""L1 hypervisors of the nested topology, and the SR-IOV VFs they pass through.

An L1 is a q35 VM with a vIOMMU (``intel-iommu``) and an emulated ``igb``
(82576, an SR-IOV PF) whose backend is a tap on the test bridge. Its
initramfs (``images/l1/``) mounts the host's root read-only under ``/host``,
so L1 runs the host's own QEMU, iproute2 and Python there
(:meth:`L1Host.host_run`), as virtme-ng does. The VFs it creates are what a
real SR-IOV NIC offers a hypervisor: a PCI function bound to ``vfio-pci``
whose MAC the PF driver sets.

:func:`l1_spec` is pure; :class:`L1Host` drives one booted L1 over its
control agent. Everything it changes in L1 (VF count, driver bindings, VF
MACs) it records, and :meth:`L1Host.restore_sriov` puts back.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import CapabilityMissing, GuestError, HarnessError
from harness.guest import CommandResult, ControlChannel
from harness.hosts import COMMAND_TIMEOUT_S, ArgvHost
from harness.image import GuestImage
from harness.netns import TestNetwork
from harness.sriov.claims import VfClaims, VirtualFunction
from harness.vm import VM, Accel, Device, TapNetdev, VMPaths, VMSpec

log = logging.getLogger(__name__)

# intel-iommu's interrupt remapping (intremap) needs the split irqchip; caching-mode
# lets L1's vfio-pci map guest memory through the vIOMMU.
L1_MACHINE = "q35,kernel-irqchip=split"
HOST_ROOT_TAG = "hostroot"
PF_ID = "pf0"
MGMT_ID = "mgmt0"
PF_NETDEV = "pf"  # netdev ids: boot_l1 puts the "pf" tap on the data bridge, "mgmt" on the management one
MGMT_NETDEV = "mgmt"
L1_BOOT_TIMEOUT_S = 120.0
# Where programs run in L1 from the host's root write (a tmpfs; the root is read-only),
# as they see it inside the chroot; L1's own shell sees it under /host.
L1_SCRATCH = "/run/fohx"
L1_TMPDIR = "/var/tmp"
# The L1s' kernels have overflowed their stacks under TCG with no call trace on the console (the
# stack was full of something the unwinder could not walk; a healthy L1's deepest task stack while
# an L2 migrates is about 4 KiB of 16). They record their kernel-mode page faults in a small ring
# (about 550 per CPU) and print it on an oops, so the next overflow's console shows which faults
# nested, at which instruction and address.
L1_FAULT_TRACE = "trace_event=exceptions:page_fault_kernel trace_buf_size=16K ftrace_dump_on_oops=orig_cpu"
# Creating VFs makes the PF driver reset and probe each one: seconds under TCG.
SRIOV_TIMEOUT_S = 60.0


def l1_spec(name: str, qemu_binary: str, accel: Accel, image: GuestImage, *, pf_mac: str, mgmt_mac: str,
            mgmt_addr: str, memory_mib: int = 2048) -> VMSpec:
    """The QEMU spec of one L1 hypervisor (taps ``<name>-pf`` and ``<name>-mg``). Pure."""
    pf_tap, mgmt_tap = TapNetdev(PF_NETDEV, f"{name}-pf"), TapNetdev(MGMT_NETDEV, f"{name}-mg")
    devices = (
        # The vIOMMU must exist before any device it translates for.
        Device("intel-iommu", None, (("intremap", "on"), ("caching-mode", True))),
        Device.of("pcie-root-port", "l1rp0", bus="pcie.0", chassis=1, addr="0x2"),
        Device.of("pcie-root-port", "l1rp1", bus="pcie.0", chassis=2, addr="0x3"),
        Device.of("igb", PF_ID, netdev=pf_tap.id, mac=pf_mac, bus="l1rp0"),
        Device.of("virtio-net-pci", MGMT_ID, netdev=mgmt_tap.id, mac=mgmt_mac, bus="l1rp1"),
        Device("virtio-9p-pci", None, (("fsdev", HOST_ROOT_TAG), ("mount_tag", HOST_ROOT_TAG))),
    )
    append = (f"console=ttyS0 panic=-1 ipv6.disable=1 intel_iommu=on {L1_FAULT_TRACE} "
              f"harness.mgmt_mac={mgmt_mac} harness.mgmt_addr={mgmt_addr}")
    return VMSpec(
        name=name, qemu_binary=qemu_binary, accel=accel, kernel=image.kernel, initrd=image.initrd,
        append=append, memory_mib=memory_mib, machine=L1_MACHINE, cpus=2,
        netdevs=(pf_tap, mgmt_tap), devices=devices,
        extra_args=("-fsdev", f"local,id={HOST_ROOT_TAG},path=/,security_model=none,readonly=on"),
    )


def start_l1(spec: VMSpec, network: TestNetwork, run_dir: Path, artifacts_dir: Path) -> L1Host:
    """Start the L1 of *spec* inside *network* (its taps on the bridges named by the netdev ids
    ``pf``: data bridge, ``mgmt``: management bridge); :meth:`L1Host.wait_ready` before using it.
    On failure nothing runs."""
    for netdev in spec.netdevs:
        network.add_tap(netdev.ifname, network.MGMT_BRIDGE if netdev.id == MGMT_NETDEV else network.BRIDGE)
    vm = VM(spec, VMPaths.for_vm(spec.name, run_dir, artifacts_dir), launcher_prefix=network.bridge_ns.exec_prefix())
    host = L1Host(vm, ControlChannel(vm.paths.control_socket, artifacts_dir / f"{spec.name}-control.log",
                                     qemu_running=vm.is_running))
    try:
        vm.launch()
    except BaseException:
        host.shutdown()
        raise
    return host


def boot_l1(spec: VMSpec, network: TestNetwork, run_dir: Path, artifacts_dir: Path) -> L1Host:
    """:func:`start_l1` and wait for its agent; on failure nothing runs."""
    host = start_l1(spec, network, run_dir, artifacts_dir)
    try:
        host.wait_ready()
    except BaseException:
        host.shutdown()
        raise
    return host


@dataclass
class L1Host:
    """One booted L1 hypervisor: its QEMU (in L0) and its control agent."""

    vm: VM
    channel: ControlChannel
    pf_address: str | None = field(default=None, init=False)
    pf_ifname: str | None = field(default=None, init=False)
    claims: VfClaims | None = field(default=None, init=False)  # once preflight() found the PF
    _vfs_created: bool = field(default=False, init=False)

    @property
    def name(self) -> str:
        return self.vm.name

    def wait_ready(self, timeout: float = L1_BOOT_TIMEOUT_S) -> None:
        self.channel.wait_ready(timeout)

    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        """Run *command* with L1's busybox ``sh`` (its initramfs)."""
        return self.channel.run(command, timeout=timeout)

    def check(self, command: str, what: str, timeout: float = 30.0) -> str:
        """Run *command*; a non-zero status raises :class:`GuestError` saying *what* failed."""
        result = self.run(command, timeout)
        if result.rc != 0:
            raise GuestError(f"{self.name}: {what}: {command!r} exited {result.rc}: {result.output.strip()[-500:]}")
        return result.output

    def host_run(self, argv: list[str], timeout: float = 30.0) -> CommandResult:
        """Run a program of the host's userspace (under ``/host``) in L1; *argv* is quoted, never a shell line."""
        return self.run(f"TMPDIR={L1_TMPDIR} chroot /host " + shlex.join(argv), timeout)

    def userspace(self) -> L1Userspace:
        """The host's userspace in this L1 as a :class:`~harness.hosts.Host` (what runs QEMU there)."""
        return L1Userspace(self)

    # -- SR-IOV -------------------------------------------------------------

    def preflight(self) -> None:
        """Check what the nested topology needs of L1; each failure names the fix."""
        if self.run("test -d /host/usr/bin").rc != 0:
            raise CapabilityMissing(f"{self.name}: the host's root is not mounted under /host (9p share "
                                    f"'{HOST_ROOT_TAG}'): the host QEMU needs virtio-9p (-fsdev local)")
        if self.run("ls /sys/kernel/iommu_groups/ | grep -q .").rc != 0:
            raise CapabilityMissing(f"{self.name}: L1's kernel has no IOMMU groups: it needs intel_iommu=on and "
                                    "a vIOMMU (-device intel-iommu,intremap=on,caching-mode=on with "
                                    "-M q35,kernel-irqchip=split)")
        if self.run("test -d /sys/bus/pci/drivers/vfio-pci").rc != 0:
            raise CapabilityMissing(f"{self.name}: L1's kernel has no vfio-pci driver: add vfio_pci to "
                                    "images/l1/modules.txt (and a kernel that builds it)")
        self.pf_address = self.check(
            "for d in /sys/bus/pci/devices/*; do [ -e $d/sriov_totalvfs ] && "
            "[ \"$(cat $d/sriov_totalvfs)\" -gt 0 ] && echo ${d##*/} && break; done; true",
            "looking for an SR-IOV PF").strip() or None
        if self.pf_address is None:
            raise CapabilityMissing(f"{self.name}: no PCI device offers SR-IOV VFs (sriov_totalvfs): L1 needs an "
                                    "emulated igb (QEMU >= 8.0) bound to the igb driver")
        self.pf_ifname = self.check(f"ls /sys/bus/pci/devices/{self.pf_address}/net/",
                                    "finding the PF's interface").split()[0]
        self.claims = VfClaims(self.userspace(), self.pf_ifname)

    def create_vfs(self, count: int) -> list[VirtualFunction]:
        """Create *count* VFs on the PF (none may exist yet) and return them."""
        assert self.pf_address is not None, "preflight() first"
        pf = f"/sys/bus/pci/devices/{self.pf_address}"
        result = self.run(f"echo {count} > {pf}/sriov_numvfs", timeout=SRIOV_TIMEOUT_S)
        self._vfs_created = True
        if result.rc != 0:
            total = self.run(f"cat {pf}/sriov_totalvfs").output.strip()
            raise CapabilityMissing(f"{self.name}: cannot create {count} VFs on {self.pf_address} "
                                    f"(sriov_totalvfs {total}): {result.output.strip()}")
        addresses = self.check(f"for i in $(seq 0 {count - 1}); do basename $(readlink {pf}/virtfn$i); done",
                               "listing the VFs").split()
        return [VirtualFunction(i, address) for i, address in enumerate(addresses)]

    def take_vf(self, vf: VirtualFunction, mac: str | None = None) -> VirtualFunction:
        """Give *vf* the failover MAC *mac* from the PF (None: leave it) and bind it to vfio-pci,
        as an SR-IOV hypervisor does before it passes a VF through."""
        assert self.claims is not None, "preflight() first"
        return self.claims.take(vf.address, mac)

    def shutdown(self) -> None:
        """Put L1's SR-IOV state back if L1 still answers, then stop its QEMU. Idempotent."""
        if self.vm.is_running():
            try:
                self.restore_sriov()
            except HarnessError as e:  # L1 is going away anyway; its QEMU must not stay behind
                log.warning("%s: %s", self.name, e)
        self.channel.close()
        self.vm.shutdown()

    def restore_sriov(self) -> None:
        """Remove the VFs this object created (their bindings and MACs go with them, so the claims on
        them are not given back one by one). Idempotent."""
        if not self._vfs_created or self.pf_address is None:
            return
        result = self.run(f"echo 0 > /sys/bus/pci/devices/{self.pf_address}/sriov_numvfs",
                          timeout=SRIOV_TIMEOUT_S)
        if result.rc != 0:
            log.warning("%s: removing the VFs failed: %s", self.name, result.output.strip())
        self._vfs_created = False



class L1Userspace(ArgvHost):
    """The host's own userspace inside an L1 (``chroot /host``), reached through L1's agent, as a Host.

    Paths are the host's view: L1's scratch tmpfs is :data:`L1_SCRATCH`.
    """

    def __init__(self, l1: L1Host) -> None:
        self.l1, self.name = l1, l1.name

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT_S, input: str | None = None) -> CommandResult:
        if input is not None:  # the agent has no stdin to give: it travels as an argument
            argv = ["sh", "-c", 'input=$1; shift; printf %s "$input" | "$@"', "sh", input, *argv]
        # Through the host's env(1): L1's busybox chroot would run its own applet for a bare name it
        # knows (ip, readlink, sh, ...), not the host's program.
        return self.l1.host_run(["/usr/bin/env", *argv], timeout)

    def close(self) -> None:
        """Nothing to release: L1's agent belongs to its :class:`L1Host`."""


@dataclass(frozen=True)
class L2Paths(VMPaths):
    """An L2 QEMU's endpoints: it runs in an L1 and reaches the harness over the management link.

    Its QMP connects to a relay listening in the test's bridge namespace
    (*qmp_relay*, onwards to :attr:`qmp_socket`); its agent's chardev listens
    on L1's management address (*control_listen*, reached through a relay
    listening at :attr:`control_socket`); its console is a file in L1.
    """

    qmp_relay: str = ""
    control_listen: str = ""
    l1_console: str = ""

    def qmp_chardev(self) -> str:
        host, port = self.qmp_relay.rsplit(":", 1)
        return f"socket,id=qmp,host={host},port={port},server=off"

    def console_chardev(self) -> str:
        return f"file,id=console,path={self.l1_console}"

    def control_chardev(self) -> str:
        host, port = self.control_listen.rsplit(":", 1)
        return f"socket,id=control,host={host},port={port},server=on,wait=off"
