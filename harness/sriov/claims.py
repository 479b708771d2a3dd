"""Taking SR-IOV VFs for a failover guest on a host, and giving them back as they were.

What an SR-IOV hypervisor does before it passes a VF to a failover guest:
set the VF's MAC from the PF (the failover MAC, which the guest's virtio-net
standby shares) and bind the VF to vfio-pci. :class:`VfClaims` does that on
any :class:`~harness.hosts.Host` (an L1 of the nested topology, a lab host
over SSH), with argv commands and sysfs writes only, and first notes what
each VF was (driver, ``driver_override``, MAC): :meth:`VfClaims.give_back`
puts that back, last taken first, and is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import CapabilityMissing, HarnessError
from harness.hosts import Host
from harness.sriov.sysfs import attribute, link_name
from harness.sriov.vf_state import parse_vf_states

log = logging.getLogger(__name__)

VFIO_DRIVER = "vfio-pci"
# sysfs shows an unset driver_override so; writing a lone newline unsets it.
NO_OVERRIDE = "(null)"


@dataclass(frozen=True)
class VirtualFunction:
    """One VF of a PF: its index under the PF, PCI address and (once set) MAC."""

    index: int
    address: str
    mac: str | None = None


@dataclass(frozen=True)
class _Before:
    """A VF as it was before the harness took it."""

    vf: VirtualFunction  # with its MAC of then
    driver: str  # "" for none
    override: str | None


@dataclass
class VfClaims:
    """The VFs of PF *pf* (an interface name) the harness took on *host*; *note* is handed what each VF
    was before anything of it changes (:meth:`restore_noted` puts that back, e.g. after a killed run)."""

    host: Host
    pf: str
    note: Callable[[dict[str, Any]], None] | None = None
    _taken: list[_Before] = field(default_factory=list, init=False)

    @classmethod
    def restore_noted(cls, host: Host, noted: dict[str, Any]) -> None:
        """Put back a VF as *note* was told it was."""
        vf = VirtualFunction(int(noted["index"]), str(noted["address"]), noted["mac"])
        cls(host, str(noted["pf"]))._restore(_Before(vf, str(noted["driver"]), noted["override"]))

    def take(self, address: str, mac: str | None = None) -> VirtualFunction:
        """Give the VF at *address* the MAC *mac* (None: leave it) from the PF and bind it to vfio-pci;
        each failure names the fix (what was already changed, :meth:`give_back` puts back)."""
        index = self._index_of(address)
        dev = f"/sys/bus/pci/devices/{address}"
        before = _Before(VirtualFunction(index, address, self._macs().get(index)),
                         link_name(self.host, f"{dev}/driver"), attribute(self.host, f"{dev}/driver_override"))
        if self.note is not None:
            self.note({"pf": self.pf, "index": index, "address": address, "mac": before.vf.mac,
                       "driver": before.driver, "override": before.override})
        self._taken.append(before)
        vf = before.vf if mac is None else self.set_mac(before.vf, mac)
        self._bind(address, before.driver, VFIO_DRIVER)
        group = link_name(self.host, f"{dev}/iommu_group")
        if not group or self.host.run(["test", "-c", f"/dev/vfio/{group}"]).rc != 0:
            raise CapabilityMissing(f"{self.host.name}: VF {address} is bound to vfio-pci but has no "
                                    f"/dev/vfio/{group or '<group>'}: the host needs an IOMMU (intel_iommu=on) "
                                    "and a group per VF")
        return vf

    def give_back(self) -> None:
        """Put every VF taken back as it was: driver, ``driver_override``, MAC. Idempotent; a step that
        fails is logged and the rest still done (the harness is tearing down)."""
        while self._taken:
            before = self._taken.pop()
            try:
                self._restore(before)
            except HarnessError as e:
                log.warning("%s: giving VF %s back: %s", self.host.name, before.vf.address, e)

    def _restore(self, before: _Before) -> None:
        dev = f"/sys/bus/pci/devices/{before.vf.address}"
        self.host.write_file(f"{dev}/driver_override",
                             "\n" if before.override in (None, NO_OVERRIDE) else before.override)
        self._bind(before.vf.address, link_name(self.host, f"{dev}/driver"), before.driver)
        if before.vf.mac is not None and self._macs().get(before.vf.index) != before.vf.mac:
            self.set_mac(before.vf, before.vf.mac)

    def _index_of(self, address: str) -> int:
        device = f"/sys/class/net/{self.pf}/device"
        links = [name for name in self.host.check(["ls", device], f"listing {self.pf}'s device").split()
                 if name.startswith("virtfn")]
        for name in links:
            if link_name(self.host, f"{device}/{name}") == address:
                return int(name.removeprefix("virtfn"))
        raise CapabilityMissing(f"{self.host.name}: {address} is not a VF of {self.pf} "
                                f"(it has {len(links)} VFs): name one of them")

    def _macs(self) -> dict[int, str]:
        shown = self.host.check(["ip", "link", "show", "dev", self.pf], f"reading {self.pf}'s VFs")
        return {index: state.mac for index, state in parse_vf_states(shown).items()}

    def set_mac(self, vf: VirtualFunction, mac: str) -> VirtualFunction:
        """Set *vf*'s MAC from the PF and read it back (all zeros clears it)."""
        result = self.host.run(["ip", "link", "set", "dev", self.pf, "vf", str(vf.index), "mac", mac])
        shown = self._macs()
        if result.rc != 0 or shown.get(vf.index) != mac.lower():
            raise CapabilityMissing(f"{self.host.name}: cannot set VF {vf.index}'s MAC to {mac} from the PF "
                                    f"{self.pf} (iproute2 says: {result.output.strip() or 'nothing'}; VF MACs now "
                                    f"{shown}): the PF driver must support ndo_set_vf_mac")
        return VirtualFunction(vf.index, vf.address, mac.lower())

    def _bind(self, address: str, current: str, wanted: str) -> None:
        """Move the device at *address* from driver *current* to *wanted* ("" for none)."""
        if current == wanted:
            return
        dev = f"/sys/bus/pci/devices/{address}"
        if wanted == VFIO_DRIVER:
            self.host.write_file(f"{dev}/driver_override", VFIO_DRIVER)
        if current:
            self.host.write_file(f"{dev}/driver/unbind", address)
        if wanted:
            # drivers_probe binds the override if set, else whichever driver matches first.
            self.host.run(["tee", "/sys/bus/pci/drivers_probe"], input=address)
        bound = link_name(self.host, f"{dev}/driver")
        if bound != wanted:
            fix = "load it (modprobe vfio-pci)" if wanted == VFIO_DRIVER else f"bind it by hand to {wanted}"
            raise CapabilityMissing(f"{self.host.name}: VF {address} is bound to {bound or 'no driver'}, "
                                    f"not {wanted or 'none'}: {fix}")
