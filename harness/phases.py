"""A migration's window split into the phases failover's promise is stated in, and what the
probes saw in each. Pure functions of a recorded :class:`~harness.timeline.Timeline`.

Failover promises that the guest keeps its network while its primary is away: the
standby carries from the guest's release of the primary on the source, through the
migration, until the primary carries again on the destination; the only outage it
cannot avoid is QEMU's stop-and-copy. The phases (docs/checks-and-metrics.md, "Reading a report"):

``baseline``
    window start → the source's ``UNPLUG_PRIMARY``
``switch``
    → the guest released the primary (its kernel's "unregistered" line, or
    else the end of QEMU's ``wait-unplug``)
``source_standby``
    → the source's ``STOP``
``stop_copy``
    → the guest runs again (the destination's ``RESUME``; after a failed or
    cancelled migration, the source's last ``MIGRATION`` event)
``destination_standby``
    → the guest registered its primary again (its kernel's "registered" line)
``primary_coming_up``
    → the first reply that left the guest on the primary again. net_failover
    drops what reaches the standby from the primary's registration on, so
    until the primary's link is up nothing carries: the guest's own outage
    (with the flat topology's e1000e primary, QEMU's 500 ms autonegotiation)
``after_restore``
    → window end

A boundary the timeline lacks takes the next one's time (its phase is empty):
without ``UNPLUG_PRIMARY`` (no failover) ``baseline`` runs to ``STOP``; with no
reply on the primary after the resume ``destination_standby`` runs to the end; with no
registration seen, ``primary_coming_up`` is empty. An empty ``primary_coming_up``
followed by replies on the primary is a primary that carried at once: its
longest gap is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.metrics import PRIMARY, STANDBY, Span, first_event_time, guest_release_time, recovery_time, state_span
from harness.timeline import Timeline

PHASE_NAMES = ("baseline", "switch", "source_standby", "stop_copy", "destination_standby", "primary_coming_up",
               "after_restore")


@dataclass(frozen=True)
class Phase(Span):
    name: str


@dataclass(frozen=True)
class PhaseStats:
    """What the probes saw in one phase. Probes count by send time, replies by when they left the
    guest (the path capture) or reached the peer (gaps)."""

    phase: Phase
    probes_sent: int
    probes_lost: int
    # Of the lost: no reply seen leaving the guest (the request was lost on the way in, or the
    # guest did not answer), and a reply that left the guest but never reached the peer. Both
    # 0 where the topology captures no path (nothing tells the direction).
    lost_inbound: int
    lost_outbound: int
    max_gap_ms: float | None  # the longest time inside the phase with no reply reaching the peer
    # Probes sent during that longest gap, and of those the ones never answered: 0 when the gap held
    # replies back (a stall: every probe answered, late) rather than lost them.
    sent_in_longest_gap: int
    lost_in_longest_gap: int
    replies_on_standby: int
    replies_on_primary: int

    @property
    def sent_outside_longest_gap(self) -> int:
        return self.probes_sent - self.sent_in_longest_gap

    @property
    def lost_outside_longest_gap(self) -> int:
        return self.probes_lost - self.lost_in_longest_gap

    @property
    def scattered_loss_pct(self) -> float | None:
        """Of the probes sent in the phase outside its longest gap, the percentage never answered: the loss
        that gap's own limit does not judge (a path that drops frames while replies keep coming); None
        when no probe was sent outside it."""
        sent = self.sent_outside_longest_gap
        return 100.0 * self.lost_outside_longest_gap / sent if sent > 0 else None

    def scalars(self) -> dict[str, int | float | None]:
        return {"ms": self.phase.ms, "probes_sent": self.probes_sent, "probes_lost": self.probes_lost,
                "scattered_loss_pct": self.scattered_loss_pct,
                "lost_inbound": self.lost_inbound, "lost_outbound": self.lost_outbound,
                "max_gap_ms": self.max_gap_ms, "replies_on_standby": self.replies_on_standby,
                "replies_on_primary": self.replies_on_primary}


def primary_release_time(timeline: Timeline) -> float | None:
    """When the guest let go of its primary after ``UNPLUG_PRIMARY``: its kernel's word, else QEMU's
    (the end of ``wait-unplug``)."""
    if first_event_time(timeline, timeline.source, "UNPLUG_PRIMARY") is None:
        return None
    released = guest_release_time(timeline)
    if released is not None:
        return released
    span = state_span(timeline, timeline.source, "wait-unplug")
    return span[1] if span else None


def migration_phases(timeline: Timeline) -> list[Phase]:
    """The phases of the migration in *timeline* (:data:`PHASE_NAMES`), in order, covering its window exactly."""
    resume = recovery_time(timeline)
    registered = back_on_primary = None
    if resume is not None:
        registered = min((g.t for g in timeline.guest_events if g.kind == "primary-registered" and g.t >= resume),
                         default=None)
        back_on_primary = min((p.t for p in timeline.paths if p.path == PRIMARY and p.t >= resume), default=None)
    if registered is not None and back_on_primary is not None:
        registered = min(registered, back_on_primary)  # the guest's clock is placed within a bound
    marks = [first_event_time(timeline, timeline.source, "UNPLUG_PRIMARY"), primary_release_time(timeline),
             first_event_time(timeline, timeline.source, "STOP"), resume, registered, back_on_primary]
    bounds = [timeline.window_start]
    for i, mark in enumerate(marks):
        known = mark if mark is not None else next((m for m in marks[i + 1:] if m is not None), timeline.window_end)
        bounds.append(min(max(known, bounds[-1]), timeline.window_end))
    bounds.append(timeline.window_end)
    return [Phase(start, end, name) for name, start, end in zip(PHASE_NAMES, bounds[:-1], bounds[1:], strict=True)]


def _first_reply_times(timeline: Timeline) -> list[float]:
    """When each answered probe's first reply arrived (later duplicates ignored), in order."""
    answered: dict[int, float] = {}
    for reply in sorted(timeline.replies, key=lambda r: r.t):
        answered.setdefault(reply.seq, reply.t)
    return sorted(answered.values())


def _reply_gaps(reply_times: list[float], start: float, end: float) -> list[Span]:
    """The stretches without a reply inside [*start*, *end*] (its edges count as boundaries)."""
    points = [start, *(t for t in reply_times if start <= t <= end), end]
    return [Span(a, b) for a, b in zip(points, points[1:], strict=False)]


def _longest_gap(reply_times: list[float], start: float, end: float) -> Span | None:
    if end <= start:
        return None
    return max(_reply_gaps(reply_times, start, end), key=lambda gap: gap.ms)


@dataclass(frozen=True)
class PhaseReport:
    """What the probes saw in one migration, phase by phase: computed once from its timeline
    (:func:`phase_report`), read by the checks, the records, the chart and the soak."""

    stats: tuple[PhaseStats, ...]  # one per PHASE_NAMES, in order
    # The longest time without a reply that overlaps stop-and-copy (STOP to RESUME): the outage
    # QEMU's downtime accounts for. None when nothing was probed or there was no stop-and-copy.
    stop_copy_outage: Span | None

    def __getitem__(self, name: str) -> PhaseStats:
        return next(s for s in self.stats if s.phase.name == name)

    def figures(self) -> dict[str, float | None]:
        """What the promise checks measure: each phase's longest gap (``<phase>.max_gap_ms``) and the loss
        outside it (``<phase>.scattered_loss_pct``), and the outage across stop-and-copy
        (``stop_copy_outage_ms``)."""
        figures: dict[str, float | None] = {}
        for s in self.stats:
            figures |= {f"{s.phase.name}.max_gap_ms": s.max_gap_ms,
                        f"{s.phase.name}.scattered_loss_pct": s.scattered_loss_pct}
        figures["stop_copy_outage_ms"] = self.stop_copy_outage.ms if self.stop_copy_outage else None
        return figures


def phase_report(timeline: Timeline) -> PhaseReport:
    """Per phase of :func:`migration_phases`: loss (and its direction where paths were captured),
    the longest reply gap inside it and the replies on each path; and the outage across stop-and-copy."""
    answered = {reply.seq for reply in timeline.replies}
    reply_times = _first_reply_times(timeline)
    probed = bool(timeline.sent)  # with no probe, a gap says nothing
    left_guest: dict[int, tuple[float, str]] = {}  # per probe: when and on which path its reply left the guest
    for seen in sorted(timeline.paths, key=lambda p: p.t):
        left_guest.setdefault(seen.seq, (seen.t, seen.path))
    phases = migration_phases(timeline)
    stats = []
    for phase in phases:
        last = phase.name == PHASE_NAMES[-1]  # the window's end belongs to the last phase

        def inside(t: float, phase: Phase = phase, last: bool = last) -> bool:
            return phase.start <= t < phase.end or (last and t == phase.end)
        sent = [p for p in timeline.sent if inside(p.t)]
        lost = [p.seq for p in sent if p.seq not in answered]
        on_path = [path for t, path in left_guest.values() if inside(t)]
        gap = _longest_gap(reply_times, phase.start, phase.end) if probed else None
        in_gap = [p.seq for p in sent if gap is not None and gap.start <= p.t < gap.end]
        stats.append(PhaseStats(
            phase=phase, probes_sent=len(sent), probes_lost=len(lost),
            lost_inbound=sum(1 for seq in lost if seq not in left_guest) if timeline.paths else 0,
            lost_outbound=sum(1 for seq in lost if seq in left_guest),
            max_gap_ms=None if gap is None else gap.ms,
            sent_in_longest_gap=len(in_gap), lost_in_longest_gap=sum(1 for seq in in_gap if seq not in answered),
            replies_on_standby=on_path.count(STANDBY), replies_on_primary=on_path.count(PRIMARY)))
    coming_up, after = stats[-2:]  # PHASE_NAMES ends with primary_coming_up, after_restore
    if probed and coming_up.phase.ms == 0 and after.phase.ms > 0:
        # The primary carried as soon as the guest registered it (a VF's link is up at once): no time without it.
        stats[-2] = replace(coming_up, max_gap_ms=0.0)
    stop_copy = phases[PHASE_NAMES.index("stop_copy")]
    outage = None
    if probed and stop_copy.end > stop_copy.start:
        overlapping = [gap for gap in _reply_gaps(reply_times, timeline.window_start, timeline.window_end)
                       if gap.start < stop_copy.end and gap.end > stop_copy.start]
        outage = max(overlapping, key=lambda span: span.ms, default=None)
    return PhaseReport(tuple(stats), outage)


def probe_interval_ms(timeline: Timeline) -> float | None:
    """The mean time between two probes sent (None with fewer than two)."""
    times = sorted(p.t for p in timeline.sent)
    return (times[-1] - times[0]) / (len(times) - 1) * 1000.0 if len(times) > 1 else None
