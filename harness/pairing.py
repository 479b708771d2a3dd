"""Preflight of a VM's failover pairing, and plain words for QEMU's own pairing messages.

Most pairing mistakes are silent or late in QEMU: a hidden primary is only
created when the guest negotiates STANDBY, so its errors are stderr warnings
(the standby then runs alone), and some mistakes (primary before standby,
MAC mismatch, a ``failover_pair_id`` naming no standby) produce no message at
all. :func:`pairing_problems` finds them from the device list before QEMU
starts; :func:`explain_qemu_messages` turns what QEMU did print into the same
problems. Both draw on one table, so a problem reads the same either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.vm import Device

STANDBY_DRIVER = "virtio-net-pci"
ROOT_PORT_DRIVER = "pcie-root-port"
ROOT_BUS = "pcie.0"  # where a device without ``bus`` sits on q35


@dataclass(frozen=True)
class PairingProblem:
    kind: str  # stable key, one of KINDS
    device: str  # the primary's id, or a description like "e1000e #2" when it has no id
    plain: str  # one sentence: what is wrong and how to fix it
    fatal: bool  # QEMU refuses to start, or failover cannot work at all
    qemu_says: str  # substring of QEMU's own message ("" when QEMU says nothing)


@dataclass(frozen=True)
class _Kind:
    fatal: bool
    qemu_says: str
    what: str  # str.format template over the details below; missing ones read as _UNKNOWN says
    fix: str


# What a detail reads as when it is not known (e.g. QEMU's message does not name it).
_UNKNOWN = {"device": "the primary", "standby": "its standby", "first": "another primary", "bus": "its bus",
            "slot": "multifunction or not at function 0"}

KINDS: dict[str, _Kind] = {
    "primary-without-id": _Kind(
        True, "Device with failover_pair_id needs to have id",
        "{device} has failover_pair_id but no id", "give it an id, QEMU keys the hidden primary by it"),
    "two-primaries": _Kind(
        True, "Cannot attach more than one primary device",
        "{device} is a second primary for {standby}, which already has {first}",
        "give each standby exactly one primary"),
    "primary-not-hotpluggable": _Kind(
        True, "does not support hotplugging",
        "{device} sits on {bus}, which cannot hot-plug", "put it behind a pcie-root-port"),
    "primary-multifunction": _Kind(
        True, "primary device must be in its own PCI slot",
        "{device} is {slot}, so QEMU cannot plug it and the standby runs alone",
        "use a VF through vfio-pci or a single-function NIC such as vmxnet3 or e1000e"),
    "primary-before-standby": _Kind(
        False, "",
        "{device} comes before {standby} on the command line, so QEMU plugs it at once and never hides it",
        "list the standby first"),
    "mac-mismatch": _Kind(
        False, "",
        "{device} has MAC {primary_mac} but {standby} has {standby_mac}, so the guest's net_failover "
        "(which pairs by permanent MAC) will not enslave it",
        "give both the same MAC"),
    "standby-missing": _Kind(
        True, "",
        "{device} has failover_pair_id={standby}, but no virtio-net-pci with failover=on has that id, "
        "so QEMU plugs it as a plain NIC and failover never engages",
        "point failover_pair_id at the standby's id, or set failover=on on the standby"),
}


class _Details(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return _UNKNOWN[key]


def _problem(kind: str, label: str, **details: str) -> PairingProblem:
    """*label* is PairingProblem.device; *details* fill the kind's sentence (``device`` as named in it)."""
    k = KINDS[kind]
    what = k.what.format_map(_Details(details))
    return PairingProblem(kind, label, f"{what}: {k.fix}.", k.fatal, k.qemu_says)


def _on(value: Any) -> bool:
    # JSON -device takes booleans; keyval spellings are accepted too.
    return value is True or str(value).lower() in ("on", "true", "yes")


def _function(addr: Any) -> int:
    """PCI function of an ``addr`` ("0x3.1", "3", or a devfn int); 0 when absent or unparsable."""
    if isinstance(addr, int):
        return addr & 7
    _, dot, fn = str(addr).partition(".")
    try:
        return int(fn, 16) if dot else 0
    except ValueError:
        return 0


def _slot_problem(driver: str, props: Mapping[str, Any]) -> str | None:
    """Why the primary does not have a PCI slot of its own, or None."""
    if driver == "igb":
        return "an SR-IOV PF, which is multifunction"
    if _on(props.get("multifunction", False)):
        return "multifunction=on"
    if fn := _function(props.get("addr")):
        return f"at function {fn} of addr {props['addr']}"
    return None


def pairing_problems(devices: Sequence[Device]) -> list[PairingProblem]:
    """Every failover pairing problem in *devices* (command-line order), primary by primary. Pure."""
    root_ports = {d.id for d in devices if d.driver == ROOT_PORT_DRIVER and d.id}
    standbys: dict[str, int] = {}  # standby id -> position on the command line
    for i, d in enumerate(devices):
        if d.driver == STANDBY_DRIVER and d.id and _on(dict(d.props).get("failover", False)):
            standbys.setdefault(d.id, i)
    first_primary: dict[str, str] = {}  # standby id -> the primary QEMU keeps
    seen_drivers: dict[str, int] = {}  # for "e1000e #2": the 2nd e1000e on the command line
    problems: list[PairingProblem] = []
    for i, d in enumerate(devices):
        seen_drivers[d.driver] = seen_drivers.get(d.driver, 0) + 1
        props = dict(d.props)
        standby = props.get("failover_pair_id")
        if standby is None:
            continue
        label = d.id or f"{d.driver} #{seen_drivers[d.driver]}"
        name = f"{d.id} ({d.driver})" if d.id else label
        if d.id is None:
            problems.append(_problem("primary-without-id", label, device=name))
        if standby not in standbys:
            problems.append(_problem("standby-missing", label, device=name, standby=standby))
        elif i < standbys[standby]:
            problems.append(_problem("primary-before-standby", label, device=name, standby=standby))
        elif d.id is not None:
            # Only primaries after the standby are hidden, and only those count against its single slot.
            first = first_primary.setdefault(standby, d.id)
            if first != d.id:
                problems.append(_problem("two-primaries", label, device=name, standby=standby, first=first))
        bus = props.get("bus", ROOT_BUS)
        if bus not in root_ports:
            problems.append(_problem("primary-not-hotpluggable", label, device=name, bus=bus))
        if slot := _slot_problem(d.driver, props):
            problems.append(_problem("primary-multifunction", label, device=name, slot=slot))
        if standby in standbys:
            primary_mac, standby_mac = props.get("mac"), dict(devices[standbys[standby]].props).get("mac")
            # A vfio-pci VF without mac= gets its MAC on the host (ip link set ... vf N mac): unknown here.
            # Otherwise a missing mac is QEMU's pick, different for each NIC.
            known = primary_mac is not None or d.driver != "vfio-pci"
            if known and (primary_mac is None or str(primary_mac).lower() != str(standby_mac).lower()):
                problems.append(_problem("mac-mismatch", label, device=name, standby=standby,
                                         primary_mac=primary_mac or "(QEMU's pick)",
                                         standby_mac=standby_mac or "(QEMU's pick)"))
    return problems


def _device_arg(line: str) -> dict[str, Any]:
    """The ``-device {...}`` JSON that QEMU quotes in front of a command-line error, or {}."""
    start = line.find("-device {")
    if start < 0:
        return {}
    try:
        arg, _ = json.JSONDecoder().raw_decode(line, start + len("-device "))
    except json.JSONDecodeError:
        return {}
    return arg if isinstance(arg, dict) else {}


def _quoted(line: str, after: str) -> list[str]:
    """The 'single-quoted' words of *line* from *after* on ([] when *after* is absent)."""
    at = line.find(after)
    return line[at:].split("'")[1::2] if at >= 0 else []


def explain_qemu_messages(lines: Iterable[str]) -> list[PairingProblem]:
    """The pairing problems QEMU's stderr *lines* report, each once, in order; other lines are ignored."""
    problems: list[PairingProblem] = []
    for line in lines:
        for kind, k in KINDS.items():
            if not k.qemu_says or k.qemu_says not in line:
                continue
            arg = _device_arg(line)
            details = {key: str(arg[prop]) for key, prop in (("device", "id"), ("standby", "failover_pair_id"))
                       if prop in arg}
            if kind == "two-primaries":
                # Cannot attach more than one primary device to '<standby>': '<first>' and '<refused>'
                names = _quoted(line, k.qemu_says)
                details.update(zip(("standby", "first", "device"), names, strict=False))
            elif kind == "primary-not-hotpluggable" and (bus := _quoted(line, "Bus '")):
                details["bus"] = bus[0]
            problem = _problem(kind, details.get("device", "?"), **details)
            if problem not in problems:
                problems.append(problem)
    return problems
