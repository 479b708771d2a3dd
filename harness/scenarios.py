"""Reusable test scenarios: drive traffic and a migration on a bed, return the timeline.

Tests call these and judge the result; the scenario itself judges nothing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.guest import FailoverView
from harness.metrics import MigrationMetrics, migration_metrics
from harness.migration import MigrationResult
from harness.timeline import Timeline
from harness.topologies import FailoverBed
from harness.traffic.probe import Prober

log = logging.getLogger(__name__)

# How long probes keep running once the primary is back: long enough to see
# whether traffic stays up after the fail-back, short enough to keep cases fast.
POST_RESTORE_OBSERVATION_S = 1.5
FIRST_REPLY_TIMEOUT_S = 10.0


@dataclass
class MeasuredMigration:
    result: MigrationResult
    timeline: Timeline
    metrics: MigrationMetrics
    restored: FailoverView | None
    restore_error: str | None
    destination_messages: list[str]
    baseline_reply: bool


def start_probe(bed: FailoverBed, config: RunConfig, log_path: Path) -> Prober:
    a = bed.addressing
    return Prober(bed.peer_exec_prefix(), bed.peer_interface(), bed.peer_mac(), a.peer_ip, a.guest_ip,
                  a.failover_mac, config.probe_rate_hz, log_path)


def migrate_under_probes(bed: FailoverBed, config: RunConfig, artifacts: Path) -> MeasuredMigration:
    """Probe the guest from the peer, migrate it, wait for the primary to return, and record it all."""
    source = bed.source
    prober = start_probe(bed, config, artifacts / "probes.jsonl")
    try:
        baseline_reply = prober.wait_reply(FIRST_REPLY_TIMEOUT_S) is not None
        destination = bed.start_destination()
        result = bed.migrate(destination)
        restored: FailoverView | None = None
        restore_error: str | None = None
        if result.status == "completed":
            try:
                restored = bed.guest.wait_primary_active(config.thresholds.primary_restore_deadline_s)
            except Exception as e:  # the guest may be unreachable: that is a finding, not a harness crash
                restore_error = f"{type(e).__name__}: {e}"
            prober.wait_reply(config.thresholds.primary_restore_deadline_s, after=time.time())
            time.sleep(POST_RESTORE_OBSERVATION_S)
        window_end = time.time()
    finally:
        samples = prober.stop()
    events = [*source.qmp.events, *destination.qmp.events] if source.qmp and destination.qmp else []
    timeline = Timeline(
        source=source.name,
        destination=destination.name,
        window_start=result.started,
        window_end=window_end,
        events=sorted(events, key=lambda e: e.ts),
        probes=samples,
        query_migrate=result.query,
    )
    (artifacts / "timeline.json").write_text(json.dumps(timeline.to_dict(), indent=1))
    return MeasuredMigration(result, timeline, migration_metrics(timeline), restored, restore_error,
                             destination.messages(), baseline_reply)
