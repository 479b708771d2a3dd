"""``failover-harness doctor``: what this host can and cannot run, each gap with its fix.

Every probe is real (a namespace is created and deleted, KVM boots a kernel)
and leaves nothing behind. Parsers of QEMU's help output are pure and tested
on recorded output; sysfs is read from an injectable root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import capabilities
from harness.accel import probe_kvm
from harness.image import ImageBuilder

# Devices the topologies use: flat (virtio-net standby, vmxnet3 or e1000e primary), nested (igb), host (vfio-pci).
NEEDED_DEVICES = ("virtio-net-pci", "vmxnet3", "e1000e", "pcie-root-port")
OPTIONAL_DEVICES = {"igb": "nested topology (emulated SR-IOV)", "vfio-pci": "nested and host topologies (VFs)"}


@dataclass(frozen=True)
class Finding:
    """One line of the diagnosis. ``ok`` None: information, nothing the flat topology needs."""

    area: str
    ok: bool | None
    detail: str
    fix: str = ""

    def render(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "info"}[self.ok]
        return f"[{mark}] {self.area}: {self.detail}" + (f"\n         fix: {self.fix}" if self.fix else "")


def parse_device_names(help_text: str) -> set[str]:
    """``qemu -device help`` → device names (``name "e1000e", bus PCI, ...``)."""
    return set(re.findall(r'^name "([^"]+)"', help_text, re.MULTILINE))


def parse_device_properties(help_text: str) -> set[str]:
    """``qemu -device virtio-net-pci,help`` → property names (``  failover=<bool> ...``)."""
    return set(re.findall(r"^\s+([\w.-]+)=<", help_text, re.MULTILINE))


def _qemu_help(binary: str, *args: str) -> str:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30).stdout


def qemu_findings(binary: str) -> list[Finding]:
    version, problem = capabilities.qemu_version(binary)
    if version is None:
        return [Finding("qemu", False, problem, "make setup")]
    out = [Finding("qemu", capabilities.missing_qemu(binary) is None,
                   f"{shutil.which(binary)} {'.'.join(map(str, version))}",
                   "" if version[:2] >= capabilities.MIN_QEMU else "QEMU >= 8.0: make setup")]
    devices = parse_device_names(_qemu_help(binary, "-device", "help"))
    missing = [d for d in NEEDED_DEVICES if d not in devices]
    out.append(Finding("qemu devices", not missing, f"missing {missing}" if missing else ", ".join(NEEDED_DEVICES),
                       "a full qemu-system-x86 build (Debian package qemu-system-x86)" if missing else ""))
    standby = parse_device_properties(_qemu_help(binary, "-device", "virtio-net-pci,help"))
    out.append(Finding("qemu failover", "failover" in standby,
                       "virtio-net-pci has failover=<bool>" if "failover" in standby else
                       "virtio-net-pci has no 'failover' property", "" if "failover" in standby else "QEMU >= 4.2"))
    for device, used_by in OPTIONAL_DEVICES.items():
        present = device in devices
        out.append(Finding(f"qemu {device}", None, ("present" if present else "absent") + f": {used_by}"))
    return out


def netns_finding() -> Finding:
    """Create and delete a namespace for real: root alone does not prove it works (containers)."""
    problem = capabilities.missing_root() or capabilities.missing_tools()
    if problem:
        return Finding("network namespaces", False, problem)
    name = f"fohx-doctor-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return Finding("network namespaces", False, f"'ip netns add' failed: {made.stderr.strip()}",
                       "run as root on a host (or a privileged container) that allows network namespaces")
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return Finding("network namespaces", True, "created and deleted one")


def kvm_finding(qemu_binary: str, kernel: Path | None) -> Finding:
    if not os.path.exists("/dev/kvm"):
        return Finding("kvm", None, "no /dev/kvm: runs fall back to TCG (about 10x slower, figures differ)",
                       "enable virtualization (VT-x/AMD-V, nested on a VM host) and load kvm_intel/kvm_amd")
    if kernel is None:
        return Finding("kvm", None, "/dev/kvm exists; not probed: no guest image yet (failover-harness image)")
    usable, why = probe_kvm(qemu_binary, kernel)
    if usable:
        return Finding("kvm", True, why)
    # Not a failure: every case runs under TCG, only slower and with other figures.
    return Finding("kvm", None, f"/dev/kvm exists but is unusable ({why}): runs use TCG",
                   "for KVM speed, a host whose KVM runs ordinary guests")


def iommu_findings(sysfs: Path = Path("/sys")) -> list[Finding]:
    groups = list((sysfs / "kernel" / "iommu_groups").glob("*"))
    out = [Finding("iommu", None, f"{len(groups)} IOMMU group(s)" if groups else
                   "no IOMMU groups: VFIO needs intel_iommu=on / amd_iommu=on (host and nested topologies only)")]
    pfs = sorted((sysfs / "class" / "net").glob("*/device/sriov_totalvfs"))
    if not pfs:
        out.append(Finding("sr-iov", None, "no SR-IOV capable NIC (the flat topology does not need one)"))
    for total in pfs:
        iface = total.parent.parent.name
        numvfs = (total.parent / "sriov_numvfs").read_text().strip()
        out.append(Finding("sr-iov", None, f"{iface}: {numvfs} of {total.read_text().strip()} VFs enabled"))
    return out


def image_finding(builder: ImageBuilder) -> tuple[Finding, Path | None]:
    cached = builder.cached()
    if cached is None:
        return Finding("guest image", None, f"not built for the current recipe (cache {builder.cache_dir})",
                       "failover-harness image (or the first run) builds it from Debian packages"), None
    return Finding("guest image", True, f"{cached.key}: kernel {cached.kernel_version}, {cached.kernel.parent}"), \
        cached.kernel


def diagnose(qemu_binary: str, cache_dir: Path) -> list[Finding]:
    """Everything, in the order a user would fix it."""
    findings = [
        Finding("root", capabilities.missing_root() is None, capabilities.missing_root() or "running as root"),
        Finding("/dev/net/tun", capabilities.missing_tun() is None, capabilities.missing_tun() or "accessible"),
        netns_finding(),
        *qemu_findings(qemu_binary),
    ]
    image, kernel = image_finding(ImageBuilder(cache_dir))
    findings += [image, kvm_finding(qemu_binary, kernel), *iommu_findings()]
    return findings
