"""The nested topology's L1 hypervisor: its QEMU command line and what it parses from iproute2."""

from __future__ import annotations

import json
from pathlib import Path

from harness.hypervisor import HOST_ROOT_TAG, L1_MACHINE, PF_ID, l1_spec
from harness.image import GuestImage
from harness.sriov.vf_state import VfState, parse_vf_states
from harness.vm import VMPaths, build_argv

IMAGE = GuestImage(Path("/img/vmlinuz"), Path("/img/initrd.cpio"), "6.1.0-56-amd64", "k")


def _argv() -> list[str]:
    spec = l1_spec("l1src", "qemu-system-x86_64", "tcg", IMAGE, pf_mac="52:54:00:aa:00:01",
                   mgmt_mac="52:54:00:ab:00:01", mgmt_addr="198.19.255.1/24")
    return build_argv(spec, VMPaths.for_vm("l1src", Path("/run"), Path("/art")))


def test_l1_has_a_viommu_before_its_devices_and_an_igb_pf() -> None:
    argv = _argv()
    assert argv[argv.index("-M") + 1] == L1_MACHINE  # intremap needs the split irqchip
    devices = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-device"]
    assert devices[0] == {"driver": "intel-iommu", "intremap": "on", "caching-mode": True}
    pf = next(d for d in devices if d.get("id") == PF_ID)
    assert pf["driver"] == "igb" and str(pf["bus"]).startswith("l1rp")  # a root port: PCIe, ARI, SR-IOV
    append = argv[argv.index("-append") + 1]
    assert "intel_iommu=on" in append and "harness.mgmt_addr=198.19.255.1/24" in append


def test_l1_shares_the_host_root_read_only() -> None:
    argv = _argv()
    fsdev = argv[argv.index("-fsdev") + 1]
    assert f"id={HOST_ROOT_TAG}" in fsdev and "path=/," in fsdev and fsdev.endswith("readonly=on")


def test_parse_vf_states() -> None:
    # iproute2 6.1 in L1, after 'ip link set eth0 vf 0 mac 52:54:00:fa:00:01' with two VFs.
    shown = """2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq master br0 state UP mode DEFAULT
    link/ether 52:54:00:11:00:01 brd ff:ff:ff:ff:ff:ff
    vf 0     link/ether 52:54:00:fa:00:01 brd ff:ff:ff:ff:ff:ff, spoof checking on, link-state auto, trust off
    vf 1     link/ether 00:00:00:00:00:00 brd ff:ff:ff:ff:ff:ff, spoof checking on, link-state auto, trust off
"""
    assert parse_vf_states(shown) == {0: VfState(0, "52:54:00:fa:00:01", spoof_check=True, trust=False),
                                      1: VfState(1, "00:00:00:00:00:00", spoof_check=True, trust=False)}
    assert parse_vf_states("2: eth0: <BROADCAST> mtu 1500\n    link/ether 52:54:00:11:00:01\n") == {}
