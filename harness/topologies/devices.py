"""The failover devices every topology gives its guest, and what names them: shared device builders.

The device ids are what cases name (re-exported by :mod:`harness.topologies`); each topology
turns these devices into its own (the nested and host topologies make the primaries VFs,
:mod:`harness.topologies.vfio`). Pure.
"""

from __future__ import annotations

from typing import Literal

from harness.config import PrimaryModel
from harness.netns import Addressing
from harness.vm import Device

STANDBY_ID = "standby0"
PRIMARY_ID = "primary0"
# The second failover pair (bed option ``pairs=2``).
STANDBY2_ID = "standby1"
PRIMARY2_ID = "primary1"

# q35 hot-plugs through ACPI by default (since QEMU 6.1); this selects native PCIe
# hotplug (the guest's pciehp, with its ~5 s attention-button delay) instead.
NATIVE_HOTPLUG_ARGS = ("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off")


# Deliberately wrong pairings, for the cases that check how QEMU and the
# harness's preflight treat them ("correct" is what every other case runs).
Pairing = Literal["correct", "primary-without-id", "two-primaries", "primary-on-root-bus", "igb-primary",
                  "primary-before-standby", "mac-mismatch"]
# The primary's MAC under "mac-mismatch": one bit off the failover MAC.
MISMATCHED_MAC = "52:54:00:fa:00:fe"


def second_pair_devices(mac: str, model: PrimaryModel = "vmxnet3") -> tuple[Device, ...]:
    """A second failover pair on its own root ports (netdevs hn2, hn3)."""
    return (
        Device.of("pcie-root-port", "rp2", bus="pcie.0", chassis=3, addr="0x4"),
        Device.of("pcie-root-port", "rp3", bus="pcie.0", chassis=4, addr="0x5"),
        Device.of("virtio-net-pci", STANDBY2_ID, netdev="hn2", mac=mac, bus="rp2", failover=True),
        Device.of(model, PRIMARY2_ID, netdev="hn3", mac=mac, bus="rp3", failover_pair_id=STANDBY2_ID, romfile=""),
    )


def failover_devices(mac: str, *, model: PrimaryModel = "vmxnet3", primary_rom: bool = False,
                     pairing: Pairing = "correct") -> tuple[Device, ...]:
    """Root ports, standby and a *model* primary, in the order QEMU needs (standby first, else never hidden)."""
    # romfile="": with an option ROM the destination refuses the stream
    # ("Unknown ramblock .../vmxnet3.rom"), a QEMU bug still present in 10.0;
    # *primary_rom* keeps the ROM, for the case that documents that bug.
    primary = Device.of(model, PRIMARY_ID, netdev="hn1", mac=mac, bus="rp1",
                        failover_pair_id=STANDBY_ID, romfile="")
    if primary_rom:
        primary = primary.without("romfile")
    ports: tuple[Device, ...] = (Device.of("pcie-root-port", "rp0", bus="pcie.0", chassis=1, addr="0x2"),
                                 Device.of("pcie-root-port", "rp1", bus="pcie.0", chassis=2, addr="0x3"))
    standby = Device.of("virtio-net-pci", STANDBY_ID, netdev="hn0", mac=mac, bus="rp0", failover=True)
    if pairing == "primary-without-id":
        primary = Device(primary.driver, None, primary.props)
    elif pairing == "primary-on-root-bus":
        primary = primary.with_props(bus="pcie.0", addr="0x5")
    elif pairing == "igb-primary":
        primary = Device("igb", PRIMARY_ID, primary.props)
    elif pairing == "mac-mismatch":
        primary = primary.with_props(mac=MISMATCHED_MAC)
    elif pairing == "primary-before-standby":
        return (*ports, primary, standby)
    elif pairing == "two-primaries":
        ports += (Device.of("pcie-root-port", "rp2", bus="pcie.0", chassis=3, addr="0x4"),)
        return (*ports, standby, primary, Device(model, "primary1", primary.with_props(bus="rp2").props))
    return (*ports, standby, primary)


def kernel_append(addressing: Addressing, second: Addressing | None = None) -> str:
    # ipv6.disable=1: the test network is IPv4, and with IPv6 each failover slave
    # runs its own DAD and MLD: frames on the data paths that are not failover's.
    append = (f"console=ttyS0 panic=-1 ipv6.disable=1 harness.mac={addressing.failover_mac} "
              f"harness.addr={addressing.guest_ip}/{addressing.prefix_len}")
    if second is not None:
        append += f" harness.mac2={second.failover_mac} harness.addr2={second.guest_ip}/{second.prefix_len}"
    return append


