"""The nested topology's L2 specs: VFs as primaries, one or two pairs, degraded destinations. Pure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import CapabilityMissing
from harness.image import GuestImage
from harness.netns import Addressing
from harness.pairing import pairing_problems
from harness.sriov.claims import VirtualFunction
from harness.topologies.common import degrade_destination
from harness.topologies.devices import PRIMARY2_ID, PRIMARY_ID, STANDBY2_ID, STANDBY_ID
from harness.topologies.nested import L1_TSC_MISMATCH, choose_l2_accel
from harness.topologies.vfio import MISSING_VF_ADDRESS, l2_spec, standby_tap, with_vfs
from harness.vm import Accel, VMSpec

IMAGE = GuestImage(Path("/img/vmlinuz"), Path("/img/initrd"), "6.1.0-test", "key")
SOURCE_VFS = (VirtualFunction(0, "0000:01:10.0", "52:54:00:fa:00:01"),
              VirtualFunction(1, "0000:01:10.2", "52:54:00:fa:00:02"))
DEST_VFS = (VirtualFunction(0, "0000:01:10.0"), VirtualFunction(1, "0000:01:10.4"))


def _spec(pairs: int) -> VMSpec:
    return l2_spec("src", "qemu-system-x86_64", IMAGE, Addressing(), SOURCE_VFS[:pairs],
                   kernel=Path("/k/vmlinux"), modules="none")


def _devices(spec: VMSpec) -> dict[str | None, dict[str, object]]:
    return {d.id: d.qmp_arguments() for d in spec.devices}


def test_one_pair_has_the_vf_as_a_vfio_primary_without_netdev_or_mac() -> None:
    spec = _spec(1)
    devices = _devices(spec)
    assert devices[PRIMARY_ID] == {"driver": "vfio-pci", "id": PRIMARY_ID, "bus": "rp1",
                                   "failover_pair_id": STANDBY_ID, "host": "0000:01:10.0"}
    assert devices[STANDBY_ID]["netdev"] == "hn0"
    assert PRIMARY2_ID not in devices and [n.ifname for n in spec.netdevs] == [standby_tap(1)]
    assert "harness.mac2" not in spec.append
    assert pairing_problems(spec.devices) == []


def test_two_pairs_each_have_their_own_vf_standby_tap_and_addresses() -> None:
    spec = _spec(2)
    devices = _devices(spec)
    assert devices[PRIMARY2_ID]["host"] == "0000:01:10.2"
    assert devices[PRIMARY2_ID]["failover_pair_id"] == STANDBY2_ID and "netdev" not in devices[PRIMARY2_ID]
    assert devices[STANDBY2_ID]["mac"] == Addressing().second_pair().failover_mac
    assert [(n.id, n.ifname) for n in spec.netdevs] == [("hn0", standby_tap(1)), ("hn2", standby_tap(2))]
    assert f"harness.addr2={Addressing().second_pair().guest_ip}/24" in spec.append
    assert pairing_problems(spec.devices) == []


def test_a_destination_takes_its_own_l1s_vfs() -> None:
    devices = _devices(with_vfs(_spec(2), DEST_VFS))
    assert (devices[PRIMARY_ID]["host"], devices[PRIMARY2_ID]["host"]) == ("0000:01:10.0", "0000:01:10.4")


@pytest.mark.parametrize(("primary", "expected"), [
    ("same", "0000:01:10.0"), ("absent", None), ("unrealizable", MISSING_VF_ADDRESS)])
def test_a_degraded_destination_loses_or_breaks_only_the_first_primary(primary: str, expected: str | None) -> None:
    spec = degrade_destination(_spec(2), primary, host=MISSING_VF_ADDRESS)  # type: ignore[arg-type]
    devices = _devices(spec)
    assert devices.get(PRIMARY_ID, {}).get("host") == expected
    assert devices[PRIMARY2_ID]["host"] == "0000:01:10.2"


def test_l2_accel_is_probed_unless_the_profile_names_it() -> None:
    probed = []

    def kvm_works() -> tuple[Accel, str]:
        probed.append(1)
        return "kvm", "in l1a: kvm usable: booted"

    assert choose_l2_accel("auto", kvm_works) == ("kvm", "in l1a: kvm usable: booted")
    assert choose_l2_accel("kvm", kvm_works) == ("kvm", "in l1a: kvm usable: booted")
    assert choose_l2_accel("tcg", kvm_works) == ("tcg", "the profile asks for TCG (nested_l2_accel tcg)")
    assert len(probed) == 2  # a profile asking for TCG does not probe


def test_a_profile_for_kvm_refuses_a_guest_that_falls_back_to_tcg() -> None:
    def kvm_broken() -> tuple[Accel, str]:
        return "tcg", "in l1a: kvm unusable: no boot within 8 s"

    assert choose_l2_accel("auto", kvm_broken) == ("tcg", "in l1a: kvm unusable: no boot within 8 s")
    with pytest.raises(CapabilityMissing, match=r"nested_l2_accel kvm: the guest cannot use KVM inside L1 \(in l1a: "
                                                r"kvm unusable: no boot within 8 s\); .* run "
                                                r"profiles/nested-tcg-in-tcg.toml"):
        choose_l2_accel("kvm", kvm_broken)


def test_the_l1s_tsc_mismatch_is_the_one_line_allowed() -> None:
    # dst2's log in a nested suite run (2026-12-06): the L2 moved to the other TCG L1.
    seen = ("qemu-system-x86_64: warning: TSC frequency mismatch between VM (2100018 kHz) and host (2098667 kHz), "
            "and TSC scaling unavailable")
    assert re.search(L1_TSC_MISMATCH, seen)
    assert not re.search(L1_TSC_MISMATCH, "qemu-system-x86_64: warning: TSC frequency mismatch, and more")
