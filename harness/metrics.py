"""Metrics as pure functions of a recorded :class:`~harness.timeline.Timeline`.

No I/O and no clocks here: the same numbers come out of a live run and of a
timeline replayed from ``tests/data``. Definitions are the ones in
DESIGN.md ("Measurements"); times are in milliseconds, ``None`` where the
timeline lacks what a metric needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.timeline import QMPEvent, Timeline


@dataclass(frozen=True)
class MigrationMetrics:
    probes_sent: int
    probes_lost: int
    max_gap_ms: float | None
    replies_after_resume: int
    unplug_wait_ms: float | None
    downtime_ms: float | None
    observed_downtime_ms: float | None
    total_time_ms: float | None
    setup_time_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _events(timeline: Timeline, vm: str, name: str) -> list[QMPEvent]:
    return [e for e in timeline.events if e.vm == vm and e.name == name]


def first_event_time(timeline: Timeline, vm: str, name: str, **data: Any) -> float | None:
    """Timestamp of the first *name* event of *vm* whose data contains *data*."""
    for e in _events(timeline, vm, name):
        if all(e.data.get(k) == v for k, v in data.items()):
            return e.ts
    return None


def state_duration_ms(timeline: Timeline, vm: str, status: str) -> float | None:
    """Time *vm*'s migration spent in *status*: that MIGRATION event → the next MIGRATION event."""
    migration = _events(timeline, vm, "MIGRATION")
    for i, e in enumerate(migration):
        if e.data.get("status") == status and i + 1 < len(migration):
            return (migration[i + 1].ts - e.ts) * 1000.0
    return None


def max_gap_ms(timeline: Timeline) -> float | None:
    """Longest interval inside the window without a reply (window edges count as boundaries)."""
    if timeline.window_end <= timeline.window_start:
        return None
    replies = sorted(
        p.received for p in timeline.probes
        if p.received is not None and timeline.window_start <= p.received <= timeline.window_end
    )
    points = [timeline.window_start, *replies, timeline.window_end]
    return max(b - a for a, b in zip(points, points[1:], strict=False)) * 1000.0


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def migration_metrics(timeline: Timeline) -> MigrationMetrics:
    """The standard metric set of one migration."""
    in_window = [p for p in timeline.probes if timeline.window_start <= p.sent <= timeline.window_end]
    resume = first_event_time(timeline, timeline.destination, "RESUME")
    stop = first_event_time(timeline, timeline.source, "STOP")
    q = timeline.query_migrate
    return MigrationMetrics(
        probes_sent=len(in_window),
        probes_lost=sum(1 for p in in_window if p.received is None),
        max_gap_ms=max_gap_ms(timeline),
        replies_after_resume=(
            sum(1 for p in timeline.probes if p.received is not None and p.received > resume)
            if resume is not None else 0
        ),
        unplug_wait_ms=state_duration_ms(timeline, timeline.source, "wait-unplug"),
        downtime_ms=_ms(q.get("downtime")),
        observed_downtime_ms=(resume - stop) * 1000.0 if resume is not None and stop is not None else None,
        total_time_ms=_ms(q.get("total-time")),
        setup_time_ms=_ms(q.get("setup-time")),
    )
