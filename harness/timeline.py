"""The records every measurement is computed from, and their JSON form.

All times are host wall-clock epoch seconds: QEMU event timestamps, kernel
packet timestamps and iperf3 timestamps share that clock, so one axis serves
the whole migration. These are plain data: recorders fill them, pure
functions in :mod:`harness.metrics` read them, and tests replay recorded ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class QMPEvent:
    vm: str
    name: str
    data: dict[str, Any]
    ts: float


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """One probe: when it was sent and, if a reply came, when (kernel receive time)."""

    seq: int
    sent: float
    received: float | None = None


@dataclass
class Timeline:
    """Everything recorded around one migration, ready for :mod:`harness.metrics`."""

    source: str
    destination: str
    window_start: float
    window_end: float
    events: list[QMPEvent] = field(default_factory=list)
    probes: list[ProbeSample] = field(default_factory=list)
    query_migrate: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timeline:
        return cls(
            source=d["source"],
            destination=d["destination"],
            window_start=d["window_start"],
            window_end=d["window_end"],
            events=[QMPEvent(**e) for e in d.get("events", [])],
            probes=[ProbeSample(**p) for p in d.get("probes", [])],
            query_migrate=dict(d.get("query_migrate", {})),
        )
