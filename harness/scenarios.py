"""Reusable test scenarios: drive traffic and a migration on a bed, return one timeline.

Tests call these and judge the result; a scenario judges nothing. Recorders
run in their own processes (probes in the peer namespace, path capture where
the data-path interfaces are, iperf3 client in the peer namespace); the QMP
recorder runs in the harness. Everything ends on one host-clock
:class:`~harness.timeline.Timeline`, saved with the test's artifacts with
its chart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.guest import ClockSync, FailoverView, Guest, failover_link_events
from harness.metrics import MigrationMetrics, ProbeStats, final_path, migration_metrics, probe_stats
from harness.migration import PLAIN_MIGRATION, MigrationPlan, MigrationResult
from harness.phases import PhaseReport, phase_report
from harness.report.chart import render_png
from harness.timeline import GuestLinkEvent, PathSeen, Timeline
from harness.topologies import FailoverBed
from harness.traffic.iperf import IperfClient, IperfResult, send_timeout_ms, start_guest_server
from harness.traffic.probe import ProbeLog, Prober

log = logging.getLogger(__name__)

# How long traffic keeps being observed once the primary is back: long enough
# to see whether it stays on the primary (500 probes at 1 kHz), short enough to keep cases fast.
POST_RESTORE_OBSERVATION_S = 0.5
FIRST_REPLY_TIMEOUT_S = 10.0
# iperf3 runs this long before the migration starts, to have a baseline.
IPERF_LEAD_S = 2.0


@dataclass
class MeasuredMigration:
    result: MigrationResult
    timeline: Timeline
    metrics: MigrationMetrics
    phases: PhaseReport
    restored: FailoverView | None
    restore_error: str | None
    vm_status: str  # query-status of the VM the guest runs on afterwards
    destination_messages: list[str]
    baseline_reply: bool
    probe_stats: dict[str, float]
    iperf: IperfResult | None
    chart_png: Path

    def seen_in(self, timeline: Timeline) -> MeasuredMigration:
        """This migration as *timeline* shows it (one pair's guest events, or its own traffic): the
        metrics and the phase report computed from that timeline, never kept from the whole one's."""
        return dataclasses.replace(self, timeline=timeline, metrics=migration_metrics(timeline),
                                   phases=phase_report(timeline))


def still_restored(guest: Guest, restored: FailoverView | None) -> FailoverView | None:
    """The guest's view at the end of the observation, if its primary had come back: a primary that came
    back and went again is not restored (seen with a QEMU that took it away again after a failed
    migration: the first look caught it enslaved while the guest was already ejecting it)."""
    if restored is None or not restored.primary_active:
        return restored
    try:
        return guest.failover()
    except HarnessError:  # the guest stopped answering since: its last view stands; the traffic tells
        return restored


def start_probe(bed: FailoverBed, config: RunConfig, log_path: Path, pair: int = 1) -> Prober:
    a = bed.pair_addressing(pair)
    return Prober(bed.peer_exec_prefix(), bed.peer_interface(), bed.peer_mac(), a.peer_ip, a.guest_ip,
                  a.failover_mac, config.probe_rate_hz, log_path)


def _try_clock_sync(guest: Guest) -> tuple[ClockSync | None, str]:
    """The guest's clock sync and the failover lines of its kernel log (``""`` if the guest could not say)."""
    try:
        return guest.clock_sync()
    except HarnessError as e:  # secondary evidence: its absence is reported, not fatal
        log.warning("guest clock sync failed: %s", e)
        return None, ""


def guest_link_events(dmesg: str, before: ClockSync | None, after: ClockSync | None,
                      stop_ts: float | None, resume_ts: float | None = None) -> list[GuestLinkEvent]:
    """Place the guest's failover link events on the host clock.

    The guest's clock pauses while the VM is stopped for migration (from the
    source's STOP to the guest's RESUME), so a sync taken on one side of the
    pause is off by its length on the other: an event is mapped with the
    pre-migration sync when that puts it before STOP, else with the
    post-migration sync. With only one of them (the other failed), an event
    that sync cannot place on its own side is left out rather than misplaced.
    """
    out = []
    for uptime, kind, iface in failover_link_events(dmesg):
        sync = before or after
        if stop_ts is not None:
            if before is not None and uptime + before.offset_s <= stop_ts:
                sync = before
            elif after is not None and (before is not None or resume_ts is None
                                        or uptime + after.offset_s >= resume_ts - after.uncertainty_s):
                sync = after
            else:
                sync = None
        if sync is not None:
            out.append(GuestLinkEvent(uptime + sync.offset_s, uptime, kind, iface))
    return out


@dataclass
class Recording:
    """Traffic recorders running around a case's actions; results are filled in when it ends."""

    prober: Prober | None
    client: IperfClient | None = None
    baseline_reply: bool = False
    probe_log: ProbeLog = field(default_factory=ProbeLog)
    paths: list[PathSeen] = field(default_factory=list)
    iperf: IperfResult | None = None
    # With sync_clock: the guest clock before and after, and the failover lines of its kernel log at the end.
    sync_before: ClockSync | None = None
    sync_after: ClockSync | None = None
    kernel_log: str = ""

    def wait_reply(self, timeout: float) -> None:
        """Wait for a probe reply sent from now on (no-op without probes)."""
        if self.prober is not None:
            self.prober.wait_reply(timeout, after=time.time())


@contextmanager
def recording(bed: FailoverBed, config: RunConfig, artifacts: Path, *, probes: bool, iperf_s: float | None,
              pair: int = 1, sync_clock: bool = False) -> Iterator[Recording]:
    """Run path capture, probes and/or an iperf3 stream of *iperf_s* around the ``with`` body, on *pair*.

    With *sync_clock*, the guest's clock is synced before the recorders start
    (they would compete with it for the CPU) and again while they wind down.
    """
    sync_before = _try_clock_sync(bed.guest)[0] if sync_clock else None
    capture = bed.path_capture(artifacts / "paths.jsonl", pair)
    rec = Recording(start_probe(bed, config, artifacts / "probes.jsonl", pair) if probes else None,
                    sync_before=sync_before)
    recorders = [r for r in (rec.prober, capture) if r is not None]
    try:
        capture.wait_ready()
        rec.baseline_reply = rec.prober.wait_reply(FIRST_REPLY_TIMEOUT_S) is not None if rec.prober else True
        if iperf_s is not None:
            start_guest_server(bed.guest)
            rec.client = IperfClient(bed.peer_exec_prefix(), bed.pair_addressing(pair).guest_ip, iperf_s,
                                     artifacts / "iperf3.json", udp_bitrate=config.iperf_udp_bitrate,
                                     send_timeout_ms=send_timeout_ms(config.thresholds.max_gap_ms))
            time.sleep(IPERF_LEAD_S)  # baseline throughput before the case acts
        yield rec
        if rec.client is not None:
            rec.iperf = rec.client.result()
        for recorder in recorders:
            recorder.request_stop()
        if sync_clock:
            rec.sync_after, rec.kernel_log = _try_clock_sync(bed.guest)
    finally:
        if rec.client is not None:
            rec.client.stop()
        for recorder in recorders:  # all wind down at once, then are read
            recorder.request_stop()
        if rec.prober is not None:
            rec.probe_log = rec.prober.result()
        rec.paths = capture.result()


def _save_timeline(timeline: Timeline, artifacts: Path, phases: PhaseReport | None = None) -> Path:
    (artifacts / "timeline.json").write_text(json.dumps(timeline.to_dict(), separators=(",", ":")))
    chart = artifacts / "timeline.png"
    chart.write_bytes(render_png(timeline, phases=phases))
    return chart


def measure_migration(bed: FailoverBed, config: RunConfig, artifacts: Path, *,
                      probes: bool = True, iperf_s: float | None = None,
                      plan: MigrationPlan = PLAIN_MIGRATION) -> MeasuredMigration:
    """Migrate the bed's guest under probes (and/or an iperf3 stream of *iperf_s*), recording everything.

    *plan* injects faults (see :class:`~harness.migration.MigrationPlan`);
    whatever the outcome, the guest is then observed where it runs, until its
    primary is back or the deadline passes. A guest paused by the plan, or
    saved to a file, is resumed where it runs afterwards (the source after a
    failed migration or restore, the destination, which stays paused like its
    source, after a completed one), as an operator would.
    """
    source = bed.source
    with recording(bed, config, artifacts, probes=probes, iperf_s=iperf_s, sync_clock=True) as rec:
        destination = bed.start_destination(primary=plan.destination_primary)
        paused_at = time.time() if plan.pause_source else None
        if plan.pause_source:
            source.qmp.execute("stop")
        result = bed.migrate(destination, plan)
        # Where the guest runs now, as an operator would: a destination that stays paused like its
        # source, or a saved source whose restore failed (QEMU leaves it in ``postmigrate``).
        if (plan.pause_source or plan.through_file) and \
                bed.source.qmp.execute("query-status")["status"] in ("paused", "postmigrate"):
            bed.source.qmp.execute("cont")
        restored: FailoverView | None = None
        restore_error: str | None = None
        restore_deadline_s = plan.restore_deadline_s or config.thresholds.primary_restore_deadline_s
        try:  # on the destination, or back on the source after a failed migration
            restored = bed.guest.wait_primary_active(restore_deadline_s)
        except HarnessError as e:  # the guest may be unreachable: a finding, not a harness crash
            restore_error = f"{type(e).__name__}: {e}"
        rec.wait_reply(restore_deadline_s)
        time.sleep(POST_RESTORE_OBSERVATION_S)
        restored = still_restored(bed.guest, restored)
        window_end = time.time()
    sync_before, sync_after = rec.sync_before, rec.sync_after
    try:
        vm_status = str(bed.source.qmp.execute("query-status")["status"])
    except HarnessError as e:  # the QEMU the guest was left on is gone: a finding
        vm_status = f"unknown ({e})"
    # The source may have migrated (and failed) before: only this migration's events count.
    events = sorted([*(e for e in source.qmp.events if e.ts >= result.started), *destination.qmp.events],
                    key=lambda e: e.ts)
    # The guest's clock stops at the plan's pause (before the migration, whose window has no STOP
    # then), else at stop-and-copy.
    stop_ts = paused_at or next((e.ts for e in events if e.vm == source.name and e.name == "STOP"), None)
    resume_ts = next((e.ts for e in events if e.name == "RESUME" and e.ts > (stop_ts or math.inf)), None)
    final_sync = sync_after or sync_before
    timeline = Timeline(
        source=source.name,
        destination=destination.name,
        window_start=result.started,
        window_end=window_end,
        events=events,
        sent=rec.probe_log.sent,
        replies=rec.probe_log.replies,
        paths=rec.paths,
        guest_events=guest_link_events(rec.kernel_log or _try_dmesg(bed.guest), sync_before, sync_after,
                                        stop_ts, resume_ts),
        throughput=rec.iperf.intervals if rec.iperf else [],
        query_migrate=result.query,
        clock_offset_s=final_sync.offset_s if final_sync else None,
        clock_uncertainty_s=final_sync.uncertainty_s if final_sync else None,
    )
    phases = phase_report(timeline)
    chart = _save_timeline(timeline, artifacts, phases)
    return MeasuredMigration(result, timeline, migration_metrics(timeline), phases, restored, restore_error, vm_status,
                             destination.messages(), rec.baseline_reply, rec.probe_log.stats, rec.iperf, chart)


@dataclass
class ObservedTraffic:
    """Traffic around actions that are not a migration (hot-unplug, re-plug, reboot)."""

    timeline: Timeline
    stats: ProbeStats
    final_path: str | None
    baseline_reply: bool
    iperf: IperfResult | None
    chart_png: Path


def observe_traffic(bed: FailoverBed, config: RunConfig, artifacts: Path, steps: Callable[[], None], *,
                    iperf_s: float | None = None) -> ObservedTraffic:
    """Run *steps* on the bed under probes (and an iperf3 stream of *iperf_s*), until traffic flows again."""
    vm = bed.source
    with recording(bed, config, artifacts, probes=True, iperf_s=iperf_s, sync_clock=True) as rec:
        started = time.time()
        steps()
        rec.wait_reply(config.thresholds.primary_restore_deadline_s)
        time.sleep(POST_RESTORE_OBSERVATION_S)
        window_end = time.time()
    sync = rec.sync_after or rec.sync_before
    timeline = Timeline(
        source=vm.name, destination=vm.name, window_start=started, window_end=window_end,
        events=[e for e in vm.qmp.events if e.ts >= started],
        sent=rec.probe_log.sent, replies=rec.probe_log.replies, paths=rec.paths,
        guest_events=guest_link_events(rec.kernel_log or _try_dmesg(bed.guest), sync, None, None),
        throughput=rec.iperf.intervals if rec.iperf else [],
        clock_offset_s=sync.offset_s if sync else None,
        clock_uncertainty_s=sync.uncertainty_s if sync else None,
    )
    chart = _save_timeline(timeline, artifacts)
    return ObservedTraffic(timeline, probe_stats(timeline), final_path(timeline), rec.baseline_reply, rec.iperf,
                           chart)


def _try_dmesg(guest: Guest) -> str:
    try:
        return guest.dmesg()
    except HarnessError as e:
        log.warning("guest dmesg unavailable: %s", e)
        return ""
