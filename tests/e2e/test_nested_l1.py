"""The nested topology's L1 hypervisor, booted for real: SR-IOV VFs created, given the
failover MAC, bound to vfio-pci and removed again; a missing vIOMMU or PF is refused
with the fix."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness import netns
from harness.accel import AccelChoice
from harness.config import RunConfig
from harness.errors import CapabilityMissing
from harness.hypervisor import PF_ID, L1Host, boot_l1, l1_spec
from harness.image import L1_RECIPE_DIR, GuestImage, ImageBuilder
from harness.vm import Device, VMSpec

FAILOVER_MAC = "52:54:00:fa:00:01"
pytestmark = pytest.mark.whole_host  # L1s under TCG take both cores


@pytest.fixture(scope="module")
def l1_image(harness_config: RunConfig, host_ready: None) -> GuestImage:
    return ImageBuilder(harness_config.cache_dir, L1_RECIPE_DIR).get()


@pytest.fixture
def network() -> Iterator[netns.TestNetwork]:
    net = netns.TestNetwork(f"l1t-{os.getpid() % 10000}").create()
    yield net
    net.delete()


def _spec(harness_config: RunConfig, accel: AccelChoice, image: GuestImage) -> VMSpec:
    return l1_spec("l1src", harness_config.qemu_binary, accel.accel, image, pf_mac="52:54:00:aa:00:01",
                   mgmt_mac="52:54:00:ab:00:01", mgmt_addr="198.19.255.1/24")


def _booted(spec: VMSpec, network: netns.TestNetwork, tmp_path: Path) -> L1Host:
    return boot_l1(spec, network, tmp_path / "run", tmp_path / "artifacts")


def test_vfs_are_created_bound_to_vfio_and_removed(harness_config: RunConfig, accel: AccelChoice,
                                                   l1_image: GuestImage, network: netns.TestNetwork,
                                                   tmp_path: Path) -> None:
    host = _booted(_spec(harness_config, accel, l1_image), network, tmp_path)
    try:
        assert "198.19.255.1/24" in host.check("ip addr show mgmt0", "management link")
        host.preflight()
        vfs = host.create_vfs(2)
        assert len({vf.address for vf in vfs}) == 2
        dev = f"/sys/bus/pci/devices/{vfs[0].address}"

        def state() -> str:
            return host.check(f"d=$(readlink {dev}/driver); echo driver ${{d##*/}}; cat {dev}/driver_override; "
                              f"chroot /host /usr/bin/ip link show {host.pf_ifname} | grep 'vf 0 '", "VF 0's state")
        before = state()
        vf = host.take_vf(vfs[0], FAILOVER_MAC)
        assert vf.mac == FAILOVER_MAC
        assert host.check(f"basename $(readlink {dev}/driver)", "driver").strip() == "vfio-pci"
        assert FAILOVER_MAC in state()
        assert host.claims is not None
        host.claims.give_back()  # driver, override and MAC as they were
        assert state() == before and "\n(null)\n" in before  # no override before
        host.restore_sriov()
        assert host.check(f"cat /sys/bus/pci/devices/{host.pf_address}/sriov_numvfs", "VF count") == "0"
    finally:
        host.shutdown()
    assert not host.vm.is_running()


def _without_viommu(spec: VMSpec) -> VMSpec:
    return replace(spec, devices=tuple(d for d in spec.devices if d.driver != "intel-iommu"),
                   append=spec.append.replace("intel_iommu=on", ""))


def _e1000e_instead_of_igb(spec: VMSpec) -> VMSpec:
    return replace(spec, devices=tuple(Device.of("e1000e", PF_ID, **dict(d.props)) if d.id == PF_ID else d
                                       for d in spec.devices))


@pytest.mark.parametrize(("breakage", "refusal"), [
    (_without_viommu, "no IOMMU groups: it needs intel_iommu=on and a vIOMMU"),
    (_e1000e_instead_of_igb, "no PCI device offers SR-IOV VFs .* needs an emulated igb"),
], ids=["no-viommu", "no-sriov-nic"])
def test_an_unfit_l1_is_refused_with_the_fix(harness_config: RunConfig, accel: AccelChoice, l1_image: GuestImage,
                                             network: netns.TestNetwork, tmp_path: Path,
                                             breakage: Callable[[VMSpec], VMSpec], refusal: str) -> None:
    host = _booted(breakage(_spec(harness_config, accel, l1_image)), network, tmp_path)
    try:
        with pytest.raises(CapabilityMissing, match=refusal):
            host.preflight()
    finally:
        host.shutdown()
