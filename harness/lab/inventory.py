"""The lab inventory: which real hosts, NICs and addresses the *host* topology may use.

A TOML file (see ``profiles/lab-example.toml``), validated once by
:func:`load_inventory`. Every error names the file and the exact field, e.g.
``lab.toml: hosts.src.vfs[1]: '3b:02.0' is not a PCI address like
0000:3b:02.0``; unknown fields are errors too (a typo must not be ignored).

Fields
------
``failover_macs``
    MACs the harness gives failover pairs (the VF and its virtio-net standby
    share one): at least one; each unicast, locally administered (so they
    cannot collide with a vendor's) and distinct. Top-level key, so it goes
    above the first ``[table]``.

``[hosts.<name>]``: a hypervisor; *name* (letters, digits, ``-``, ``_``) is
how the rest of the file and the reports call it.
    ``address``
        ``"local"`` for the machine the harness runs on, else the hostname or
        IP address to reach it over SSH.
    ``port`` (22), ``user`` ("root"), ``key``, ``known_hosts``, ``host_key_check`` (true)
        SSH only, so not allowed with ``address = "local"``. ``key`` is the
        private key file (required: key authentication only).
        ``known_hosts`` defaults to ``~/.ssh/known_hosts``; its host key must
        match unless ``host_key_check = false`` (a throwaway lab only).
        Relative paths are relative to the inventory file; ``~`` expands.
    ``pf``
        The SR-IOV physical function's interface name on that host.
    ``vfs``
        PCI addresses (``0000:3b:02.0``) of the VFs of *pf* the harness may
        take (bind to vfio-pci, set MACs on): at least one, distinct.
    ``mgmt_address``
        IPv4 address the other hosts reach this one on, for the migration
        stream (a management network, not the path under test); distinct
        per host.
    ``qemu_binary`` ("qemu-system-x86_64")
        The QEMU under test on that host.
    ``standby_bridge`` (needed by ``--topology host``)
        A bridge on that host that reaches the VFs' network (the PF, or its
        uplink, is a port of it): the harness adds each virtio-net standby's
        tap to it, and removes it afterwards.

``[peer]``: the traffic peer the probes and iperf3 talk to.
    ``host``
        The inventory host it runs on, or ``"local"``: the harness's own
        machine. On a lab host, its programs (probes, capture, iperf3) run
        there over SSH (:mod:`harness.lab.remote_command`; the host needs
        python3 and iperf3, which the doctor checks).
    ``namespace`` (optional)
        The network namespace on that host that holds *interface*; absent:
        the host's own.
    ``interface``
        Its interface on the VFs' network.
    ``address``
        IPv4 address with prefix (``198.18.0.1/24``), inside 198.18.0.0/15:
        the harness sends only inside that benchmarking range.

``[thresholds]``
    The same limits as a run profile's (:class:`harness.config.Thresholds`).

``[pairs.<name>]`` (optional): the failover pairs a run may use at once, one
per xdist worker (``failover-harness run -- -n N``, :mod:`harness.lab.pairs`).
    ``source``, ``destination``
        ``{ host = "<host>", vf = "<PCI address>" }``: where the guest starts
        and where it migrates to, each a VF listed in that host's ``vfs``. A
        VF belongs to one pair; source and destination may be one host (a
        local migration).
    The n-th pair's guest takes the n-th failover MAC and the n-th address
    after the peer's (two guests on the peer's network at once need their
    own), so there are at most as many pairs as ``failover_macs``.

Migration needs two VFs. Without ``pairs`` there is one pair, ``default``:
the first VF of the first two hosts, or one host's first two VFs (a local
migration).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from harness.config import Thresholds
from harness.errors import ConfigError

TEST_NETWORK = IPv4Network("198.18.0.0/15")
LOCAL = "local"
IMPLICIT_PAIR = "default"  # the one pair of an inventory without [pairs]
_SSH_FIELDS = ("port", "user", "key", "known_hosts", "host_key_check")
_PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
                          re.IGNORECASE)


def _invalid(field: str, message: str) -> PydanticCustomError:
    """An error at *field*, below the model being validated (pydantic's own location stops at the model)."""
    return PydanticCustomError("inventory", message, {"inventory_field": field})


def _pci_address(value: str) -> str:
    normal = value.lower()
    if not _PCI_RE.match(normal):
        raise ValueError(f"{value!r} is not a PCI address like 0000:3b:02.0 (domain:bus:device.function, "
                         "as in /sys/bus/pci/devices)")
    return normal


def _mac(value: str) -> str:
    normal = value.lower()
    if not _MAC_RE.match(normal):
        raise ValueError(f"{value!r} is not a MAC address like 52:54:00:fa:00:01")
    first = int(normal[:2], 16)
    if first & 1:
        raise ValueError(f"{value} is a multicast address: a failover MAC must be unicast "
                         "(first octet even, e.g. 52:...)")
    if not first & 2:
        raise ValueError(f"{value} is not locally administered: set bit 1 of the first octet "
                         "(e.g. 52:... or 02:...) so that it cannot collide with a vendor's MAC")
    return normal


def _address(value: str) -> str:
    if value == LOCAL:
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME_RE.match(value):
            raise ValueError(f"{value!r} is neither \"local\" nor a hostname or IP address") from None
    return value


def _matching(regex: str, what: str) -> AfterValidator:
    """A check that says what the value should have been, not which regex it missed."""
    pattern = re.compile(regex)

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value
    return AfterValidator(check)


def _with_prefix(value: Any) -> Any:
    if isinstance(value, str) and "/" not in value:
        raise ValueError(f"{value!r} has no prefix length: write it like 198.18.0.1/24")
    return value


PciAddress = Annotated[str, AfterValidator(_pci_address)]
MacAddress = Annotated[str, AfterValidator(_mac)]
IfName = Annotated[str, _matching(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$",
                                  "an interface name (at most 15 letters, digits, '_', '.', '-')")]
HostName = Annotated[str, _matching(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
                                    "a host name (a letter, then up to 31 letters, digits, '-', '_')")]
PairName = Annotated[str, _matching(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
                                    "a pair name (a letter, then up to 31 letters, digits, '-', '_')")]
NetnsName = Annotated[str, _matching(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", "a network namespace name")]


class HostSpec(BaseModel):
    """One hypervisor: how to reach it, which NIC functions the harness may use, its QEMU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: Annotated[str, AfterValidator(_address)]
    port: int = Field(22, ge=1, le=65535)
    user: str = Field("root", min_length=1)
    key: Path | None = None
    known_hosts: Path | None = None
    host_key_check: bool = True
    pf: IfName
    vfs: tuple[PciAddress, ...] = Field(min_length=1)
    mgmt_address: IPv4Address
    qemu_binary: str = Field("qemu-system-x86_64", min_length=1)
    standby_bridge: IfName | None = None

    @field_validator("key", "known_hosts")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """``~`` expanded; a relative path is taken from the inventory file's directory, not the working one."""
        if value is None:
            return None
        path = value.expanduser()
        base = (info.context or {}).get("base_dir")
        return base / path if base is not None and not path.is_absolute() else path

    @property
    def is_local(self) -> bool:
        return self.address == LOCAL

    @model_validator(mode="after")
    def _consistent(self) -> HostSpec:
        if self.is_local:
            for name in _SSH_FIELDS:
                if name in self.model_fields_set:
                    raise _invalid(name, 'SSH setting on a local host (address = "local"): remove it')
        elif self.key is None:
            raise _invalid("key", "required for an SSH host: the private key file to log in with "
                                  "(key authentication only)")
        _check_distinct("vfs", self.vfs)
        return self


class PairEnd(BaseModel):
    """One end of a failover pair: a host of the inventory and one of its VFs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: HostName
    vf: PciAddress

    def __str__(self) -> str:
        return f"{self.host} VF {self.vf}"


class PairSpec(BaseModel):
    """A failover pair as the inventory names it: where the guest starts, where it migrates to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: PairEnd
    destination: PairEnd


@dataclass(frozen=True)
class Pair:
    """A failover pair a bed runs on, with what its guest takes: the *index*-th failover MAC and the
    *index*-th address after the peer's (:func:`guest_ip`)."""

    name: str
    index: int
    source: PairEnd
    destination: PairEnd
    failover_mac: str

    @property
    def ends(self) -> tuple[PairEnd, PairEnd]:
        return self.source, self.destination

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts of the pair, the source's first (one, for a local migration)."""
        return tuple(dict.fromkeys(end.host for end in self.ends))

    def __str__(self) -> str:
        return f"{self.name} ({self.source} → {self.destination})"


def guest_ip(peer: IPv4Interface, index: int) -> IPv4Address:
    """The address of the *index*-th pair's guest: the (index+1)-th after the peer's, in its subnet. Pure;
    ValueError if the subnet has no such address."""
    guest = peer.ip + 1 + index
    if guest not in peer.network or guest == peer.network.broadcast_address:
        raise ValueError(f"{peer} leaves no address for the guest{f' of pair {index + 1}' if index else ''} "
                         f"after it in {peer.network}")
    return guest


class PeerSpec(BaseModel):
    """Where the traffic peer lives and the address it sends from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    namespace: NetnsName | None = None
    interface: IfName
    address: Annotated[IPv4Interface, BeforeValidator(_with_prefix)]

    @field_validator("address")
    @classmethod
    def _in_test_network(cls, value: IPv4Interface) -> IPv4Interface:
        if not value.network.subnet_of(TEST_NETWORK):
            raise ValueError(f"{value} is outside {TEST_NETWORK}: the harness sends only inside that benchmarking "
                             "range (RFC 2544); pick a subnet of it, e.g. 198.18.0.1/24")
        return value


class Inventory(BaseModel):
    """The whole lab, checked once; see the module docstring for each field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failover_macs: tuple[MacAddress, ...] = Field(min_length=1)
    hosts: dict[HostName, HostSpec] = Field(min_length=1)
    peer: PeerSpec
    thresholds: Thresholds = Thresholds()
    pairs: dict[PairName, PairSpec] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Inventory:
        if self.peer.host != LOCAL and self.peer.host not in self.hosts:
            raise _invalid("peer.host", f"{self.peer.host!r} is neither {LOCAL!r} nor a host of this inventory "
                                        f"(hosts: {', '.join(self.hosts)})")
        if self.pairs:
            self._check_pairs()
        elif len(self.hosts) == 1:
            name, host = next(iter(self.hosts.items()))
            if len(host.vfs) < 2:
                raise _invalid(f"hosts.{name}.vfs", "a single host needs at least two VFs, one for the "
                                                    "source VM and one for the destination (local migration); "
                                                    "or add a second host")
        _check_distinct("failover_macs", self.failover_macs)
        _check_distinct_hosts("mgmt_address", {n: h.mgmt_address for n, h in self.hosts.items()})
        return self

    def _check_pairs(self) -> None:
        owner: dict[tuple[str, str], str] = {}
        for name, spec in self.pairs.items():
            for role, end in (("source", spec.source), ("destination", spec.destination)):
                where = f"pairs.{name}.{role}"
                if end.host not in self.hosts:
                    raise _invalid(f"{where}.host", f"{end.host!r} is not a host of this inventory "
                                                    f"(hosts: {', '.join(self.hosts)})")
                if end.vf not in self.hosts[end.host].vfs:
                    raise _invalid(f"{where}.vf", f"{end.vf} is not in hosts.{end.host}.vfs "
                                                  f"({', '.join(self.hosts[end.host].vfs)}): add it there, or "
                                                  "take one of those")
                if (end.host, end.vf) in owner:
                    raise _invalid(f"{where}.vf", f"{end} is also {owner[end.host, end.vf]}'s: a VF belongs to "
                                                  "one pair (two guests cannot share it)")
                owner[end.host, end.vf] = where
        if len(self.pairs) > len(self.failover_macs):
            raise _invalid("pairs", f"{len(self.pairs)} pairs but {len(self.failover_macs)} failover_macs: each "
                                    "pair's guest takes a MAC of its own (the n-th pair the n-th): add "
                                    f"{len(self.pairs) - len(self.failover_macs)} to failover_macs")
        try:
            guest_ip(self.peer.address, len(self.pairs) - 1)
        except ValueError as e:
            raise _invalid("peer.address", f"{e}: the n-th pair's guest takes the n-th address after the peer's; "
                                           "give the peer a wider subnet or an address lower in it") from None

    @property
    def failover_pairs(self) -> tuple[Pair, ...]:
        """The pairs a run may use: ``[pairs]`` in file order, or the one implicit pair (:data:`IMPLICIT_PAIR`)."""
        macs = self.failover_macs
        if self.pairs:
            return tuple(Pair(name, i, spec.source, spec.destination, macs[i])
                         for i, (name, spec) in enumerate(self.pairs.items()))
        names = list(self.hosts)
        first = self.hosts[names[0]]
        if len(names) > 1:
            ends = PairEnd(host=names[0], vf=first.vfs[0]), PairEnd(host=names[1], vf=self.hosts[names[1]].vfs[0])
        else:
            ends = PairEnd(host=names[0], vf=first.vfs[0]), PairEnd(host=names[0], vf=first.vfs[1])
        return (Pair(IMPLICIT_PAIR, 0, *ends, macs[0]),)


def _check_distinct(field: str, values: Iterable[object]) -> None:
    first: dict[object, int] = {}
    for i, value in enumerate(values):
        if value in first:
            raise _invalid(f"{field}[{i}]", f"{value} is listed twice (also {field}[{first[value]}])")
        first[value] = i


def _check_distinct_hosts(field: str, values: dict[str, object]) -> None:
    owner: dict[object, str] = {}
    for name, value in values.items():
        if value in owner:
            raise _invalid(f"hosts.{name}.{field}", f"{value} is also hosts.{owner[value]}.{field}: "
                                                    "each host needs its own")
        owner[value] = name


def field_path(loc: tuple[int | str, ...], ctx: dict[str, Any] | None = None) -> str:
    """``('hosts', 'src', 'vfs', 1)`` → ``hosts.src.vfs[1]``, plus the sub-field a model validator named."""
    parts = [*loc, *(ctx or {}).get("inventory_field", "").split(".")]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part and part != "[key]":  # a bad [hosts.<name>]: the name is the previous part
            path += f".{part}" if path else part
    return path or "(top level)"


# pydantic's words where they would puzzle someone editing TOML (formatted with the error's context).
_MESSAGES = {
    "extra_forbidden": "unknown field (a typo?): the fields are listed in profiles/lab-example.toml",
    "missing": "required: add it (see profiles/lab-example.toml)",
    "too_short": "must list at least {min_length} (it lists {actual_length})",
}


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        template = _MESSAGES.get(e["type"])
        message = template.format(**e.get("ctx", {})) if template else e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {field_path(e['loc'], e.get('ctx'))}: {message}")
    return "\n".join(lines)


def parse_inventory(data: dict[str, Any], source: str, base_dir: Path | None = None) -> Inventory:
    """Validate an inventory already read from TOML; errors name *source* and the field."""
    try:
        return Inventory.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        raise ConfigError(_describe(e, source)) from None


def load_inventory(path: Path) -> Inventory:
    """Read and validate the inventory file *path*; a missing file or bad TOML is a ConfigError too."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such inventory file (start from profiles/lab-example.toml)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_inventory(data, str(path), path.parent)
