"""Live migration with failover under traffic: the foundation conformance case.

Each judgement is a named check (JUnit property ``check.<name>``); the case
fails listing every failed check, with measured values and thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.checks import CheckList
from harness.config import RunConfig
from harness.report import record_metrics
from harness.scenarios import migrate_under_probes
from harness.topologies import FailoverBed
from harness.topologies.flat import PRIMARY_ID, STANDBY_ID

pytestmark = pytest.mark.timing


def test_migration_with_failover_under_traffic(
    failover_bed: FailoverBed, harness_config: RunConfig, test_artifacts: Path, record_property: Any
) -> None:
    bed, limits = failover_bed, harness_config.thresholds
    checks = CheckList(record_property)
    source_qmp = bed.source.qmp
    assert source_qmp is not None

    negotiated = [e for e in source_qmp.events if e.name == "FAILOVER_NEGOTIATED"]
    checks.check("failover_negotiated", any(e.data.get("device-id") == STANDBY_ID for e in negotiated),
                 f"FAILOVER_NEGOTIATED events on the source: {[e.data for e in negotiated] or 'none'}")
    before = bed.guest.wait_primary_active(limits.primary_restore_deadline_s)
    checks.check("primary_enslaved_before_migration", before.primary_active, before.describe())

    run = migrate_under_probes(bed, harness_config, test_artifacts)
    record_metrics(record_property, run.metrics)
    m = run.metrics

    checks.check("probe_baseline", run.baseline_reply, "the peer reached the guest before migrating"
                 if run.baseline_reply else "no probe reply before migration: the data path was down already")
    destination_said = "; QEMU on the destination said: " + " | ".join(run.destination_messages)
    completed = run.result.status == "completed"
    checks.check("migration_completed", completed,
                 f"status {run.result.status}, states {run.result.states}"
                 + (f", error {run.result.query.get('error-desc')}" if run.result.query.get("error-desc") else "")
                 + (f", cancelled by the harness: {run.result.cancel_reason}" if run.result.cancel_reason else "")
                 + ("" if completed or not run.destination_messages else destination_said))
    unplugs = [e for e in run.timeline.events
               if e.vm == run.timeline.source and e.name == "UNPLUG_PRIMARY"]
    checks.check("unplug_primary_emitted", any(e.data.get("device-id") == PRIMARY_ID for e in unplugs),
                 f"UNPLUG_PRIMARY on the source: {[e.data for e in unplugs] or 'none'}")
    checks.check("wait_unplug_entered", "wait-unplug" in run.result.states,
                 f"source states {run.result.states}; wait-unplug lasted "
                 + (f"{m.unplug_wait_ms:.0f} ms" if m.unplug_wait_ms is not None else "-"))

    if run.restored is not None:
        restored_ok, detail = run.restored.primary_active, run.restored.describe()
    else:
        restored_ok, detail = False, run.restore_error or "migration did not complete"
    if not restored_ok and run.destination_messages:
        detail += destination_said
    checks.check("primary_restored", restored_ok,
                 ("primary enslaved with the failover MAC and up: " if restored_ok else "primary not restored: ")
                 + detail)
    checks.check("replies_resumed", m.replies_after_resume > 0,
                 f"{m.replies_after_resume} probe replies after the destination resumed")
    checks.at_most("probes_lost", m.probes_lost, limits.max_probes_lost)
    checks.at_most("max_gap_ms", m.max_gap_ms, limits.max_gap_ms, " ms")
    checks.verify()
