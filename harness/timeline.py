"""The records every measurement is computed from, and their JSON form.

All times are host wall-clock epoch seconds: QEMU event timestamps, kernel
packet timestamps and iperf3 timestamps share that clock, so one axis serves
the whole migration. Guest timestamps are converted with an estimated clock
offset and kept as secondary evidence. These are plain data: recorders fill
them, pure functions in :mod:`harness.metrics` read them, and tests replay
recorded ones from ``tests/data``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class QMPEvent:
    vm: str
    name: str
    data: dict[str, Any]
    ts: float


@dataclass(frozen=True, slots=True)
class ProbeSent:
    seq: int
    t: float


@dataclass(frozen=True, slots=True)
class ProbeReply:
    """A reply as the peer received it (kernel receive time); duplicates appear more than once."""

    seq: int
    t: float


@dataclass(frozen=True, slots=True)
class PathSeen:
    """A reply seen leaving the guest on one data path (``primary`` or ``standby``), from the host side."""

    seq: int
    t: float
    path: str


@dataclass(frozen=True, slots=True)
class GuestLinkEvent:
    """The guest kernel's view: a failover slave registered or unregistered (secondary evidence)."""

    t: float  # host clock, converted with the estimated offset
    guest_uptime: float
    kind: str  # "primary-registered", "primary-unregistered", ...
    detail: str


@dataclass(frozen=True, slots=True)
class ThroughputInterval:
    start: float
    end: float
    bits_per_second: float
    retransmits: int | None = None


@dataclass
class Timeline:
    """Everything recorded around one migration, ready for :mod:`harness.metrics`."""

    source: str
    destination: str
    window_start: float
    window_end: float
    events: list[QMPEvent] = field(default_factory=list)
    sent: list[ProbeSent] = field(default_factory=list)
    replies: list[ProbeReply] = field(default_factory=list)
    paths: list[PathSeen] = field(default_factory=list)
    guest_events: list[GuestLinkEvent] = field(default_factory=list)
    throughput: list[ThroughputInterval] = field(default_factory=list)
    query_migrate: dict[str, Any] = field(default_factory=dict)
    # Host time minus the guest kernel log clock (after the migration), and its ± bound.
    clock_offset_s: float | None = None
    clock_uncertainty_s: float | None = None

    _RECORDS: ClassVar[dict[str, type]] = {
        "events": QMPEvent, "sent": ProbeSent, "replies": ProbeReply, "paths": PathSeen,
        "guest_events": GuestLinkEvent, "throughput": ThroughputInterval,
    }

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) if f.name not in self._RECORDS
                else [asdict(r) for r in getattr(self, f.name)] for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timeline:
        kwargs = dict(d)
        for name, record in cls._RECORDS.items():
            kwargs[name] = [record(**r) for r in d.get(name, [])]
        return cls(**kwargs)
