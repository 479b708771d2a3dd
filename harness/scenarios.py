"""Reusable test scenarios: drive traffic and a migration on a bed, return one timeline.

Tests call these and judge the result; a scenario judges nothing. Recorders
run in their own processes (probes in the peer namespace, path capture where
the data-path interfaces are, iperf3 client in the peer namespace); the QMP
recorder runs in the harness. Everything ends on one host-clock
:class:`~harness.timeline.Timeline`, saved with the test's artifacts with
its chart.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.guest import ClockSync, FailoverView, Guest, failover_link_events
from harness.metrics import MigrationMetrics, migration_metrics
from harness.migration import MigrationResult
from harness.report.chart import render_png
from harness.timeline import GuestLinkEvent, Timeline
from harness.topologies import FailoverBed
from harness.traffic.iperf import IperfClient, IperfResult, start_guest_server
from harness.traffic.probe import ProbeLog, Prober

log = logging.getLogger(__name__)

# How long traffic keeps being observed once the primary is back: long enough
# to see whether it stays on the primary, short enough to keep cases fast.
POST_RESTORE_OBSERVATION_S = 1.5
FIRST_REPLY_TIMEOUT_S = 10.0
# iperf3 runs this long before the migration starts, to have a baseline.
IPERF_LEAD_S = 2.0


@dataclass
class MeasuredMigration:
    result: MigrationResult
    timeline: Timeline
    metrics: MigrationMetrics
    restored: FailoverView | None
    restore_error: str | None
    destination_messages: list[str]
    baseline_reply: bool
    probe_stats: dict[str, float]
    iperf: IperfResult | None
    chart_png: Path


def start_probe(bed: FailoverBed, config: RunConfig, log_path: Path) -> Prober:
    a = bed.addressing
    return Prober(bed.peer_exec_prefix(), bed.peer_interface(), bed.peer_mac(), a.peer_ip, a.guest_ip,
                  a.failover_mac, config.probe_rate_hz, log_path)


def _try_clock_sync(guest: Guest) -> ClockSync | None:
    try:
        return guest.clock_sync()
    except HarnessError as e:  # secondary evidence: its absence is reported, not fatal
        log.warning("guest clock sync failed: %s", e)
        return None


def guest_link_events(dmesg: str, before: ClockSync | None, after: ClockSync | None,
                      stop_ts: float | None) -> list[GuestLinkEvent]:
    """Place the guest's failover link events on the host clock.

    The guest's clock may pause while the VM is stopped for migration, so an
    event is mapped with the pre-migration sync when that puts it before the
    source's STOP, else with the post-migration sync.
    """
    out = []
    for uptime, kind, iface in failover_link_events(dmesg):
        sync = before or after
        if before is not None and after is not None and stop_ts is not None and uptime + before.offset_s > stop_ts:
            sync = after
        if sync is not None:
            out.append(GuestLinkEvent(uptime + sync.offset_s, uptime, kind, iface))
    return out


def measure_migration(bed: FailoverBed, config: RunConfig, artifacts: Path, *,
                      probes: bool = True, iperf_s: float | None = None) -> MeasuredMigration:
    """Migrate the bed's guest under probes (and/or an iperf3 stream of *iperf_s*), recording everything."""
    source = bed.source
    sync_before = _try_clock_sync(bed.guest)
    capture = bed.path_capture(artifacts / "paths.jsonl")
    prober = start_probe(bed, config, artifacts / "probes.jsonl") if probes else None
    client: IperfClient | None = None
    iperf: IperfResult | None = None
    try:
        baseline_reply = prober.wait_reply(FIRST_REPLY_TIMEOUT_S) is not None if prober else True
        if iperf_s is not None:
            start_guest_server(bed.guest)
            client = IperfClient(bed.peer_exec_prefix(), bed.addressing.guest_ip, iperf_s,
                                 artifacts / "iperf3.json", udp_bitrate=config.iperf_udp_bitrate)
            time.sleep(IPERF_LEAD_S)  # baseline throughput before the migration
        destination = bed.start_destination()
        result = bed.migrate(destination)
        restored: FailoverView | None = None
        restore_error: str | None = None
        if result.status == "completed":
            try:
                restored = bed.guest.wait_primary_active(config.thresholds.primary_restore_deadline_s)
            except HarnessError as e:  # the guest may be unreachable: a finding, not a harness crash
                restore_error = f"{type(e).__name__}: {e}"
            if prober:
                prober.wait_reply(config.thresholds.primary_restore_deadline_s, after=time.time())
            time.sleep(POST_RESTORE_OBSERVATION_S)
        window_end = time.time()
        if client is not None:
            iperf = client.result()
    finally:
        if client is not None:
            client.stop()
        probe_log = prober.result() if prober else ProbeLog()
        paths = capture.result()
    sync_after = _try_clock_sync(bed.guest) if result.status == "completed" else None
    events = [*source.qmp.events, *destination.qmp.events] if source.qmp and destination.qmp else []
    stop_ts = next((e.ts for e in events if e.vm == source.name and e.name == "STOP"), None)
    dmesg = _try_dmesg(bed.guest)
    final_sync = sync_after or sync_before
    timeline = Timeline(
        source=source.name,
        destination=destination.name,
        window_start=result.started,
        window_end=window_end,
        events=sorted(events, key=lambda e: e.ts),
        sent=probe_log.sent,
        replies=probe_log.replies,
        paths=paths,
        guest_events=guest_link_events(dmesg, sync_before, sync_after, stop_ts),
        throughput=iperf.intervals if iperf else [],
        query_migrate=result.query,
        clock_offset_s=final_sync.offset_s if final_sync else None,
        clock_uncertainty_s=final_sync.uncertainty_s if final_sync else None,
    )
    (artifacts / "timeline.json").write_text(json.dumps(timeline.to_dict(), separators=(",", ":")))
    chart = artifacts / "timeline.png"
    chart.write_bytes(render_png(timeline))
    return MeasuredMigration(result, timeline, migration_metrics(timeline), restored, restore_error,
                             destination.messages(), baseline_reply, probe_log.stats, iperf, chart)


def _try_dmesg(guest: Guest) -> str:
    try:
        return guest.dmesg()
    except HarnessError as e:
        log.warning("guest dmesg unavailable: %s", e)
        return ""
