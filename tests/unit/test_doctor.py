"""The doctor's parsers on QEMU 10.0.2's recorded help output, and its sysfs reading on a fake tree."""

from __future__ import annotations

from pathlib import Path

from harness.doctor import Finding, iommu_findings, parse_device_names, parse_device_properties

DEVICE_HELP = """\
Controller/Bridge/Hub devices:
name "pcie-root-port", bus PCI, desc "PCI Express Root Port"
name "pxb", bus PCI, desc "PCI Expander Bridge"

Network devices:
name "e1000e", bus PCI, desc "Intel 82574L GbE Controller"
name "igb", bus PCI, desc "Intel 82576 Gigabit Ethernet Controller"
name "virtio-net-pci", bus PCI, alias "virtio-net"

Misc devices:
name "vfio-pci", bus PCI, desc "VFIO-based PCI device assignment"
"""

VIRTIO_NET_HELP = """\
virtio-net-pci options:
  acpi-index=<uint32>    -  (default: 0)
  addr=<str>             - Slot and optional function number, example: 06.0 or 06 (default: -1)
  failover=<bool>        - on/off (default: off)
  host_mtu=<uint16>      -  (default: 0)
"""


def test_device_names() -> None:
    assert parse_device_names(DEVICE_HELP) == {"pcie-root-port", "pxb", "e1000e", "igb", "virtio-net-pci",
                                               "vfio-pci"}


def test_device_properties() -> None:
    props = parse_device_properties(VIRTIO_NET_HELP)
    assert "failover" in props and "host_mtu" in props and "acpi-index" in props
    assert "failover" not in parse_device_properties(VIRTIO_NET_HELP.replace("failover", "x"))


def test_sriov_and_iommu_read_from_sysfs(tmp_path: Path) -> None:
    assert [f.detail for f in iommu_findings(tmp_path)] == [
        "no IOMMU groups: VFIO needs intel_iommu=on / amd_iommu=on (host and nested topologies only)",
        "no SR-IOV capable NIC (the flat topology does not need one)"]
    for group in ("0", "1"):
        (tmp_path / "kernel" / "iommu_groups" / group).mkdir(parents=True)
    device = tmp_path / "class" / "net" / "enp1s0" / "device"
    device.mkdir(parents=True)
    (device / "sriov_totalvfs").write_text("7\n")
    (device / "sriov_numvfs").write_text("2\n")
    assert [f.detail for f in iommu_findings(tmp_path)] == ["2 IOMMU group(s)", "enp1s0: 2 of 7 VFs enabled"]


def test_render_names_the_fix() -> None:
    assert Finding("qemu", False, "QEMU 7.2 is older than 8.0", "make setup").render() == (
        "[FAIL] qemu: QEMU 7.2 is older than 8.0\n         fix: make setup")
    assert Finding("sr-iov", None, "none").render() == "[info] sr-iov: none"
