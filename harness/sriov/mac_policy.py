"""What an SR-IOV bed does with the VF's failover MAC while the guest's primary is away.

On the nested and host topologies the primary is a VF whose MAC the PF set, and
the NIC steers frames for that MAC by its own rules, also while the VF is
detached from the guest (on the source after the unplug, on the destination
before QEMU plugs it). Each policy (``vf_mac_policy``) is what a management
layer could do, so that a vendor can show what their NIC does under it:

``shared`` (default)
    The VF keeps the MAC and the PF's own filter has it too (``bridge fdb add
    MAC dev PF self``, the step the kernel's net_failover documentation takes):
    a frame goes to the VF and to the PF, whose bridge hands it to the standby.
``vf-only``
    The VF keeps the MAC, the PF's filter does not have it: the NIC's own
    steering, which sends a frame for the MAC to the VF alone.
``cleared``
    As ``vf-only``, but the MAC is cleared from the VF (from the PF) once the
    guest released the primary on the source, and set back before that VF is
    passed to a guest again. After a failed migration it is set back at once,
    racing QEMU's re-plug of the primary: a guest that probes the VF first sees
    no MAC and does not enslave it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from harness.config import VfMacPolicy
from harness.migration import MigrationPlan
from harness.timeline import QMPEvent
from harness.vm import VM

# What ``ip link set PF vf N mac`` takes to clear a VF's MAC.
NO_MAC = "00:00:00:00:00:00"


def pf_shares_mac(policy: VfMacPolicy) -> bool:
    """Whether the PF's own filter gets the failover MAC too."""
    return policy == "shared"


def primary_released(source_events: Sequence[QMPEvent]) -> bool:
    """Whether the source's latest migration (in its QMP *source_events*) went through ``wait-unplug``,
    which QEMU leaves only once the guest released the primary. (A failover primary's eject emits
    no ``DEVICE_DELETED``: QEMU keeps the device, to plug it back should the migration fail.)"""
    states = [e.data.get("status") for e in source_events if e.name == "MIGRATION"]
    began = max((i for i, status in enumerate(states) if status == "setup"), default=-1)
    return "wait-unplug" in states[began + 1:]


def clearing_mac_when_released(plan: MigrationPlan, clear: Callable[[], None]) -> MigrationPlan:
    """*plan*, calling *clear* when the source goes ``active`` after its guest released the primary
    (failover's ``wait-unplug`` ends there), before the case's own hook for ``active`` if it has one."""
    own = plan.on_status.get("active")

    def on_active(source: VM, destination: VM) -> None:
        if primary_released(source.qmp.events):
            clear()
        if own is not None:
            own(source, destination)
    return replace(plan, on_status={**plan.on_status, "active": on_active})
