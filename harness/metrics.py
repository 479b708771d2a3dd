"""Metrics as pure functions of a recorded :class:`~harness.timeline.Timeline`.

No I/O and no clocks here: the same numbers come out of a live run and of a
timeline replayed from ``tests/data``. Definitions are the ones docs/checks-and-metrics.md
gives under "Reading a report" (``metric.<name>``); times are in milliseconds,
``None`` where the timeline lacks what a metric needs.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.timeline import PathSeen, QMPEvent, ThroughputInterval, Timeline

PRIMARY, STANDBY = "primary", "standby"
# How many of the last attributed replies must have travelled on the primary for
# "traffic is back on the primary" (one stray standby reply right after the
# fail-back is normal; the tail must be clean).
FINAL_REPLIES = 20


@dataclass(frozen=True)
class Span:
    """A stretch of host time (epoch seconds)."""

    start: float
    end: float

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0


@dataclass(frozen=True)
class Outage(Span):
    """A run of consecutive unanswered probes, in send time: first lost probe → next answered one."""


@dataclass(frozen=True)
class ProbeStats:
    sent: int
    lost: int
    duplicates: int
    reordered: int
    max_gap_ms: float | None
    outages: tuple[Outage, ...]


@dataclass(frozen=True)
class MigrationMetrics:
    probes_sent: int
    probes_lost: int
    duplicates: int
    reordered: int
    max_gap_ms: float | None
    outage_count: int
    longest_outage_ms: float | None
    replies_after_resume: int
    unplug_wait_ms: float | None
    # UNPLUG_PRIMARY → the guest's "failover primary slave ... unregistered";
    # and how long before the end of wait-unplug that came (negative: QEMU
    # moved on while the guest still had its primary).
    primary_released_ms: float | None
    release_before_unplug_end_ms: float | None
    downtime_ms: float | None
    observed_downtime_ms: float | None
    total_time_ms: float | None
    setup_time_ms: float | None
    switch_to_standby_ms: float | None
    standby_time_ms: float | None
    failback_ms: float | None
    replies_on_primary: int
    replies_on_standby: int
    replies_unattributed: int
    final_path: str | None
    throughput_min_mbps: float | None = None
    throughput_mean_mbps: float | None = None
    throughput_after_resume_mbps: float | None = None
    throughput_stall_ms: float | None = None
    outages: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scalars(self) -> dict[str, int | float | str | None]:
        """The single-valued metrics (for JUnit properties)."""
        return {k: v for k, v in self.as_dict().items() if not isinstance(v, list)}


def first_event_time(timeline: Timeline, vm: str, name: str, **data: Any) -> float | None:
    """Timestamp of the first *name* event of *vm* whose data contains *data*."""
    for e in timeline.events:
        if e.vm == vm and e.name == name and all(e.data.get(k) == v for k, v in data.items()):
            return e.ts
    return None


def _migration_states(timeline: Timeline, vm: str) -> list[QMPEvent]:
    return [e for e in timeline.events if e.vm == vm and e.name == "MIGRATION"]


def state_span(timeline: Timeline, vm: str, status: str) -> tuple[float, float] | None:
    """When *vm*'s migration entered *status* and when it left it (the next MIGRATION event)."""
    migration = _migration_states(timeline, vm)
    for i, e in enumerate(migration):
        if e.data.get("status") == status and i + 1 < len(migration):
            return e.ts, migration[i + 1].ts
    return None


def state_duration_ms(timeline: Timeline, vm: str, status: str) -> float | None:
    """Time *vm*'s migration spent in *status*."""
    span = state_span(timeline, vm, status)
    return (span[1] - span[0]) * 1000.0 if span else None


def probe_stats(timeline: Timeline) -> ProbeStats:
    """Loss, duplicates, reordering, longest reply gap and outage windows inside the window."""
    start, end = timeline.window_start, timeline.window_end
    sent = sorted((p for p in timeline.sent if start <= p.t <= end), key=lambda p: p.seq)
    in_window = {p.seq for p in sent}
    first_reply: dict[int, float] = {}
    duplicates = reordered = 0
    highest = -1
    for r in sorted(timeline.replies, key=lambda r: r.t):
        if r.seq not in in_window:
            continue
        if r.seq in first_reply:
            duplicates += 1
            continue
        first_reply[r.seq] = r.t
        if r.seq < highest:
            reordered += 1
        highest = max(highest, r.seq)
    outages: list[Outage] = []
    run_start: float | None = None
    for p in sent:
        if p.seq not in first_reply:
            run_start = p.t if run_start is None else run_start
        elif run_start is not None:
            outages.append(Outage(run_start, p.t))
            run_start = None
    if run_start is not None:
        outages.append(Outage(run_start, end))
    gap = None
    if sent and end > start:
        points = [start, *sorted(t for t in first_reply.values() if start <= t <= end), end]
        gap = max(b - a for a, b in zip(points, points[1:], strict=False)) * 1000.0
    return ProbeStats(len(sent), len(sent) - len(first_reply), duplicates, reordered, gap, tuple(outages))


def max_gap_ms_of(timeline: Timeline) -> float | None:
    """Longest interval inside the window without a reply (window edges count as boundaries)."""
    return probe_stats(timeline).max_gap_ms


def _first_path_after(paths: list[PathSeen], path: str, after: float | None) -> float | None:
    if after is None:
        return None
    return next((p.t for p in paths if p.path == path and p.t >= after), None)


def attribute(timeline: Timeline) -> dict[int, str]:
    """Path of each reply, by sequence number (the first sighting wins)."""
    out: dict[int, str] = {}
    for p in sorted(timeline.paths, key=lambda p: p.t):
        out.setdefault(p.seq, p.path)
    return out


def final_path(timeline: Timeline, count: int = FINAL_REPLIES) -> str | None:
    """``primary``/``standby`` when the last *count* attributed replies in the window agree, else ``mixed``."""
    by_seq = attribute(timeline)
    window = [r for r in sorted(timeline.replies, key=lambda r: r.t)
              if timeline.window_start <= r.t <= timeline.window_end and r.seq in by_seq]
    tail = {by_seq[r.seq] for r in window[-count:]}
    if not tail:
        return None
    return tail.pop() if len(tail) == 1 else "mixed"


def throughput_mbps(intervals: list[ThroughputInterval], start: float, end: float,
                    *, whole: bool = False) -> tuple[float | None, float | None]:
    """(minimum, mean) throughput in Mbit/s of the intervals overlapping [start, end] (*whole*: inside it)."""
    inside = [i.bits_per_second / 1e6 for i in intervals
              if (start <= i.start and i.end <= end if whole else i.end > start and i.start < end)]
    if not inside:
        return None, None
    return min(inside), statistics.fmean(inside)


def throughput_after_resume(intervals: list[ThroughputInterval], resume: float | None) -> float | None:
    """Mean throughput in Mbit/s from *resume* to the end of the stream.

    To the stream's end, not the observation window's: a TCP sender whose
    segments were lost across the switch backs off (0.2, 0.4, 0.8, 1.6 s ...)
    and may only retry after the primary is back. Only intervals that start
    after *resume* count: one straddling it carries pre-migration throughput.
    """
    if resume is None or not intervals:
        return None
    return throughput_mbps(intervals, resume, max(i.end for i in intervals), whole=True)[1]


def longest_stall_ms(intervals: list[ThroughputInterval]) -> float | None:
    """Longest run of consecutive iperf3 intervals that carried no data (0 without a stall)."""
    if not intervals:
        return None
    longest = 0.0
    stall_start: float | None = None
    for interval in sorted(intervals, key=lambda i: i.start):
        if interval.bits_per_second > 0:
            stall_start = None
            continue
        stall_start = interval.start if stall_start is None else stall_start
        longest = max(longest, (interval.end - stall_start) * 1000.0)
    return longest


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _between_ms(start: float | None, end: float | None) -> float | None:
    return (end - start) * 1000.0 if start is not None and end is not None else None


def recovery_time(timeline: Timeline) -> float | None:
    """When the guest runs on for good: the destination's RESUME or, after a failed or
    cancelled migration, the source's final MIGRATION event (QEMU re-plugs the primary there)."""
    resume = first_event_time(timeline, timeline.destination, "RESUME")
    if resume is not None:
        return resume
    ends = [e.ts for e in _migration_states(timeline, timeline.source)
            if e.data.get("status") in ("failed", "cancelled")]
    return ends[-1] if ends else None


def guest_release_time(timeline: Timeline) -> float | None:
    """When the guest's kernel said it let go of its primary ("unregistered") after the source's
    ``UNPLUG_PRIMARY``. Its log is placed on the host clock within ± the clock sync's bound, so a
    line placed up to that bound before the request counts, at the request's time (a guest cannot
    release before it is asked; under load the placement put one 1 ms early)."""
    unplug = first_event_time(timeline, timeline.source, "UNPLUG_PRIMARY")
    if unplug is None:
        return None
    earliest = unplug - (timeline.clock_uncertainty_s or 0.0)
    released = [g.t for g in timeline.guest_events if g.kind == "primary-unregistered" and g.t >= earliest]
    return max(unplug, min(released)) if released else None


def migration_metrics(timeline: Timeline) -> MigrationMetrics:
    """The standard metric set of one migration (``resume`` is :func:`recovery_time`)."""
    stats = probe_stats(timeline)
    src = timeline.source
    resume = recovery_time(timeline)
    stop = first_event_time(timeline, src, "STOP")
    unplug = first_event_time(timeline, src, "UNPLUG_PRIMARY")
    released = guest_release_time(timeline)
    unplug_span = state_span(timeline, src, "wait-unplug")
    paths = sorted(timeline.paths, key=lambda p: p.t)
    first_standby = _first_path_after(paths, STANDBY, unplug)
    back_on_primary = _first_path_after(paths, PRIMARY, resume)
    by_seq = attribute(timeline)
    window_replies = {r.seq for r in timeline.replies if timeline.window_start <= r.t <= timeline.window_end}
    on = [by_seq.get(seq) for seq in window_replies]
    q = timeline.query_migrate
    tmin, tmean = throughput_mbps(timeline.throughput, timeline.window_start, timeline.window_end)
    return MigrationMetrics(
        probes_sent=stats.sent,
        probes_lost=stats.lost,
        duplicates=stats.duplicates,
        reordered=stats.reordered,
        max_gap_ms=stats.max_gap_ms,
        outage_count=len(stats.outages),
        longest_outage_ms=max((o.ms for o in stats.outages), default=None),
        replies_after_resume=(sum(1 for r in timeline.replies if r.t > resume) if resume is not None else 0),
        unplug_wait_ms=state_duration_ms(timeline, src, "wait-unplug"),
        primary_released_ms=_between_ms(unplug, released),
        release_before_unplug_end_ms=_between_ms(released, unplug_span[1] if unplug_span else None),
        downtime_ms=_ms(q.get("downtime")),
        observed_downtime_ms=_between_ms(stop, resume),
        total_time_ms=_ms(q.get("total-time")),
        setup_time_ms=_ms(q.get("setup-time")),
        switch_to_standby_ms=_between_ms(unplug, first_standby),
        standby_time_ms=_between_ms(first_standby, back_on_primary),
        failback_ms=_between_ms(resume, back_on_primary),
        replies_on_primary=on.count(PRIMARY),
        replies_on_standby=on.count(STANDBY),
        replies_unattributed=on.count(None),
        final_path=final_path(timeline),
        throughput_min_mbps=tmin,
        throughput_mean_mbps=tmean,
        throughput_after_resume_mbps=throughput_after_resume(timeline.throughput, resume),
        throughput_stall_ms=longest_stall_ms(timeline.throughput),
        outages=[{"start": o.start, "end": o.end, "ms": o.ms} for o in stats.outages],
    )
