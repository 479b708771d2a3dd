"""Fault paths: migrations that are cancelled, lose their destination, never leave wait-unplug, or land degraded.

A paused VM's migration (``stop``, then ``migrate``, as ``virsh save`` of a paused
domain does) is QEMU's known limitation: a paused guest cannot release its
primary, and QEMU waits in ``wait-unplug`` with no timeout (a ``pause-vm`` fix
was proposed upstream, never merged). Its case asks for what a fixed QEMU would
do and is a strict expected failure on the QEMUs it was verified on.

The contract under test is QEMU's ``MIG_EVENT_PRECOPY_FAILED`` path: a failed
or cancelled migration re-plugs the primary on the source, which keeps
running, and the next attempt unplugs it again (``UNPLUG_PRIMARY`` fires
anew; RHBZ 1787194 was that it did not). Each case then migrates for real to
a fresh destination, judged like any other migration under the ``retry.``
checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.checks import CheckList
from harness.config import RunConfig
from harness.metrics import PRIMARY, STANDBY
from harness.migration import PAUSED_IN_WAIT_UNPLUG, MigrationPlan
from harness.report import record_timeline
from harness.scenarios import MeasuredMigration, measure_migration, observe_traffic
from harness.topologies import DEGRADED_DESTINATION, HOTPLUG_STYLE, PRIMARY_ID, FailoverBed
from harness.verdicts import (
    check_failover_ready,
    check_migration,
    check_probes,
    check_unplug_primary_emitted,
    expect_known_qemu_bug,
    measure_and_record,
    record_migration,
    verify_unless_known_bug,
)
from harness.vm import VM

# Slow enough that the migration is still ``active`` when a hook acts on it
# (a TCG guest's RAM otherwise moves in about a second).
CRAWL_BYTES_PER_S = 4 << 20
# What QEMU 10.0 prints when a case cuts the migration stream on purpose (cancel,
# killed destination): the log scan must not count it against the case.
STREAM_CUT_ON_PURPOSE = pytest.mark.allow_log(
    r"load of migration failed", r"check_section_footer: Read section footer failed",
    r"error while loading state section", r"failed to save SaveStateEntry",
    # A killed destination resets the connection if it had unread data, else the pipe just breaks.
    r"Unable to write to socket: (Broken pipe|Connection reset by peer)",
    r"Getting RAM address failed",  # the stream was cut inside a RAM page header
)


def _cancel(source: VM, destination: VM) -> None:
    source.qmp.execute("migrate_cancel")


def _kill_destination(source: VM, destination: VM) -> None:
    destination.kill()


def _resume_source(source: VM, destination: VM) -> None:
    source.qmp.execute("cont")


@dataclass(frozen=True)
class Fault:
    plan: MigrationPlan
    expected_status: str
    what: str


FAULTS = {
    # With ACPI the guest ejects ~0.25 s after the request, so the cancel must
    # be quick; with native hotplug pciehp waits ~5 s first.
    "cancel-in-wait-unplug": Fault(MigrationPlan(on_status={"wait-unplug": _cancel}), "cancelled",
                                   "migrate_cancel during wait-unplug"),
    "cancel-in-active": Fault(MigrationPlan(on_status={"active": _cancel}, max_bandwidth=CRAWL_BYTES_PER_S),
                              "cancelled", "migrate_cancel during active"),
    "destination-killed": Fault(MigrationPlan(on_status={"active": _kill_destination},
                                              max_bandwidth=CRAWL_BYTES_PER_S),
                                "failed", "destination QEMU killed (SIGKILL) during active"),
}


def check_recovered_on_source(run: MeasuredMigration, fault: Fault, state_at_fault: str, checks: CheckList) -> bool:
    """After a failed attempt: the source runs on, its primary is re-plugged and carries the traffic again.
    True if a retry can show the next unplug: the fault was exercised and the source is running with its
    primary re-plugged."""
    result, m = run.result, run.metrics
    checks.check("migration_ended_as_expected", result.status == fault.expected_status,
                 f"{fault.what}: status {result.status} (expected {fault.expected_status}), states {result.states}"
                 + (f", error {result.query.get('error-desc')}" if result.query.get("error-desc") else ""))
    hit = state_at_fault in result.states and result.states.index(state_at_fault) < len(result.states) - 1
    checks.check("fault_hit_in_state", hit, f"source states {result.states}; the fault was meant for {state_at_fault}")
    check_unplug_primary_emitted(run, checks)
    status = run.vm_status
    checks.check("source_kept_running", status == "running", f"source VM status after the attempt: {status}")
    view = run.restored
    replugged = checks.check(
        "primary_replugged", view is not None and view.primary_active,
        ("primary re-plugged and enslaved on the source: " if view is not None and view.primary_active
         else "primary not back on the source: ")
        + (view.describe() if view is not None else run.restore_error or "guest not reachable"))
    checks.check("traffic_back_on_primary", m.final_path == PRIMARY,
                 f"the last replies travelled on: {m.final_path or 'no attributed reply'} "
                 f"(primary {m.replies_on_primary}, standby {m.replies_on_standby})")
    return hit and status == "running" and replugged


@pytest.mark.timing
@STREAM_CUT_ON_PURPOSE
@pytest.mark.parametrize(("failover_bed", "fault_name"), [
    pytest.param({"hotplug": "acpi"}, "cancel-in-wait-unplug", id="cancel-in-wait-unplug-acpi"),
    pytest.param({"hotplug": "native"}, "cancel-in-wait-unplug", marks=pytest.mark.bed_needs(HOTPLUG_STYLE),
                 id="cancel-in-wait-unplug-native"),
    pytest.param({}, "cancel-in-active", id="cancel-in-active"),
    pytest.param({}, "destination-killed", id="destination-killed"),
], indirect=["failover_bed"])
def test_failed_migration_recovers_and_retries(
    failover_bed: FailoverBed, fault_name: str, harness_config: RunConfig, test_artifacts: Path,
    record_property: Any,
) -> None:
    """A cancelled or failed migration leaves the source running on its primary; the next migration succeeds."""
    fault, checks = FAULTS[fault_name], CheckList(record_property)
    (state_at_fault,) = fault.plan.on_status
    check_failover_ready(failover_bed, harness_config, checks)
    attempt_dir = test_artifacts / "attempt"
    attempt_dir.mkdir()
    attempt = measure_migration(failover_bed, harness_config, attempt_dir, plan=fault.plan)
    record_migration(record_property, attempt, prefix="attempt.")
    record_timeline(record_property, attempt.timeline, name="timeline_attempt")
    if not check_recovered_on_source(attempt, fault, state_at_fault, checks.scope("attempt")):
        # A fault never exercised, or a source not running on its primary, cannot show the next unplug:
        # a retry would only wait out the migration's deadlines (minutes) and prove nothing more.
        checks.check("retry.attempted", False, "no retry: the attempt did not exercise its fault or the source "
                     "did not recover (attempt.fault_hit_in_state, attempt.source_kept_running, "
                     "attempt.primary_replugged)")
        checks.verify()
    retry_dir = test_artifacts / "retry"
    retry_dir.mkdir()
    retry = measure_migration(failover_bed, harness_config, retry_dir)
    record_migration(record_property, retry, prefix="retry.")
    record_timeline(record_property, retry.timeline, name="timeline_retry")
    check_probes(retry, harness_config.thresholds, checks.scope("retry"))
    checks.verify()


# A paused VM's migration waits in wait-unplug for an eject that cannot come, verified
# through this QEMU. Strict: the day such a QEMU migrates it, the case fails as XPASS.
PAUSED_UNPLUG_VERIFIED_THROUGH = (10, 0)
# The harness cancels the held migration and resumes the source at once: the guest then
# ejects, the cancel ends within QEMU's grace, and QEMU plugs the primary back.
PAUSED_SOURCE_GIVEN_UP = Fault(MigrationPlan(pause_source=True, on_status={"cancelling": _resume_source}),
                               "cancelled", "the harness cancelled the held migration and resumed the source")


@STREAM_CUT_ON_PURPOSE
def test_paused_vm_migrates(
    failover_bed: FailoverBed, harness_config: RunConfig, test_artifacts: Path, record_property: Any,
    request: pytest.FixtureRequest,
) -> None:
    """A paused VM migrated (save of a paused domain): it should complete with the primary back on the
    destination; on known QEMUs the migration is held in wait-unplug, and the source must recover."""
    expect_known_qemu_bug(request, harness_config.qemu_binary, PAUSED_UNPLUG_VERIFIED_THROUGH,
                          "a paused guest cannot release its primary: the migration is held in wait-unplug "
                          "(no timeout; the pause-vm fix was never merged)")
    checks = CheckList(record_property)
    run = measure_and_record(failover_bed, harness_config, test_artifacts, record_property, checks,
                             plan=PAUSED_SOURCE_GIVEN_UP.plan)
    result = run.result
    check_migration(run, checks)
    held = f"source states {result.states}" + (f"; the harness cancelled: {result.cancel_reason}"
                                                if result.cancel_reason else "")
    checks.check("unplug_done_while_paused", PAUSED_IN_WAIT_UNPLUG not in held, held)
    if result.status != "completed":  # the guest stayed on the source: it must run on as before
        check_recovered_on_source(run, PAUSED_SOURCE_GIVEN_UP, "wait-unplug", checks.scope("recovery"))
    verify_unless_known_bug(checks, PAUSED_IN_WAIT_UNPLUG, [held], never_absorbed=("recovery.",))


# Short: the harness cancels as soon as it sees the source paused in wait-unplug; this
# deadline is the backstop should it not, and how long the case waits for the primary.
NEVER_EJECTS_DEADLINE_S = 5.0
# QEMU keeps waiting for the eject after a cancel: 120 x 250 ms (migration/migration.c).
QEMU_CANCEL_GRACE_S = 30.0


@pytest.mark.timing
@STREAM_CUT_ON_PURPOSE
@pytest.mark.allow_log(r"warning: migration: partially unplugged device on failure")
def test_guest_that_never_ejects_is_cancelled_by_the_harness(
    failover_bed: FailoverBed, harness_config: RunConfig, test_artifacts: Path, record_property: Any
) -> None:
    """A stopped guest cannot eject: QEMU would sit in wait-unplug forever; the harness sees the source
    paused there, cancels and says why."""
    checks = CheckList(record_property)
    plan = MigrationPlan(pause_source=True, wait_unplug_deadline_s=NEVER_EJECTS_DEADLINE_S,
                         restore_deadline_s=NEVER_EJECTS_DEADLINE_S)
    run = measure_and_record(failover_bed, harness_config, test_artifacts, record_property, checks, plan=plan)
    result = run.result
    checks.check("stuck_in_wait_unplug", "wait-unplug" in result.states and result.cancel_reason is not None,
                 f"source states {result.states}; harness: {result.cancel_reason or 'did not need to cancel'}")
    checks.check("cancelled", result.status == "cancelled", f"status {result.status}, states {result.states}")
    cancelled_at = next((e.ts for e in run.timeline.events if e.vm == run.timeline.source
                         and e.name == "MIGRATION" and e.data.get("status") == "cancelled"), None)
    grace_s = (cancelled_at - result.cancel_issued) if cancelled_at and result.cancel_issued else None
    record_property("metric.cancel_grace_ms", None if grace_s is None else round(grace_s * 1000, 1))
    checks.check("qemu_cancel_grace_measured", grace_s is not None and grace_s >= QEMU_CANCEL_GRACE_S * 0.9,
                 f"migrate_cancel → cancelled took {grace_s:.1f} s (QEMU waits up to {QEMU_CANCEL_GRACE_S:.0f} s "
                 "for the eject)" if grace_s is not None else "no cancelled event after the harness's cancel")
    warned = [line for line in failover_bed.source.messages() if "partially unplugged" in line]
    checks.check("qemu_warned_partial_unplug", bool(warned),
                 warned[0] if warned else "no 'partially unplugged device on failure' warning from QEMU")
    checks.check("source_kept_running", run.vm_status == "running",
                 f"source VM status after cont: {run.vm_status}")
    checks.check("replies_resumed", run.metrics.replies_after_resume > 0,
                 f"{run.metrics.replies_after_resume} probe replies after the cancel")
    if result.status != "cancelled":
        # Nothing to recover from: the guest stayed stopped wherever the migration took it, and
        # re-adding its primary would only wait out the guest's deadlines.
        checks.check("source_recovered", False, f"no recovery to try: the migration ended {result.status}, "
                     "not cancelled in wait-unplug")
        checks.verify()
    # QEMU leaves the slot with both an unplug and a re-plug pending (ACPI UP and
    # DOWN): the resumed guest ejects, and QEMU then deletes the primary for good.
    # Recovery is then the operator's: add it again, as the harness does here.
    dropped = [e for e in failover_bed.source.qmp.events
               if e.name == "DEVICE_DELETED" and e.data.get("device") == PRIMARY_ID]
    record_property("run.primary_after_cancel",
                    "re-plugged by QEMU" if run.restored and run.restored.primary_active else
                    "deleted by QEMU when the guest resumed (DEVICE_DELETED); re-added by the harness" if dropped
                    else "missing")

    def readd_primary() -> None:
        if dropped:
            failover_bed.plug_primary()
        failover_bed.guest.wait_primary_active(harness_config.thresholds.primary_restore_deadline_s)

    recovery_dir = test_artifacts / "recovery"
    recovery_dir.mkdir()
    recovery = observe_traffic(failover_bed, harness_config, recovery_dir, readd_primary)
    view = failover_bed.guest.failover()
    checks.check("source_recovered", view.primary_active and recovery.final_path == PRIMARY,
                 f"{view.describe()}; last replies on {recovery.final_path or 'no attributed reply'}")
    checks.verify()


# The guest enslaves a restored primary within about a second under TCG;
# waiting longer for one that cannot come only slows the case.
DEGRADED_RESTORE_WAIT_S = 5.0


@pytest.mark.bed_needs(DEGRADED_DESTINATION)
# What QEMU says of a primary it cannot create: an emulated NIC's missing netdev (flat), a VF
# that is not there (nested).
@pytest.mark.allow_log(r"warning: Primary device not found", r"^Virtio-net failover will not work",
                       r"warning: Property '[\w-]+\.netdev' can't find value 'nonexistent'",
                       r"warning: vfio \S+: no such host device")
@pytest.mark.parametrize("destination_primary", ["absent", "unrealizable"])
def test_degraded_destination_is_reported(
    failover_bed: FailoverBed, destination_primary: str, harness_config: RunConfig, test_artifacts: Path,
    record_property: Any,
) -> None:
    """A destination without a usable primary: QEMU completes with a warning, the harness must not pass it.

    The case asserts the trap (completion, QEMU's warning, the guest left on its
    standby) and that the harness's primary_restored judgement fails, quoting QEMU.
    """
    checks = CheckList(record_property)
    plan = MigrationPlan(destination_primary=destination_primary,  # type: ignore[arg-type]
                         restore_deadline_s=DEGRADED_RESTORE_WAIT_S)
    run = measure_and_record(failover_bed, harness_config, test_artifacts, record_property, checks, plan=plan)
    checks.check("migration_completed", run.result.status == "completed",
                 f"status {run.result.status} (QEMU completes a degraded migration with only a warning)")
    warning = [line for line in run.destination_messages if "warning" in line]
    checks.check("destination_warned", bool(warning), " | ".join(warning) or "QEMU on the destination said nothing")
    verdict = CheckList()
    check_migration(run, verdict)
    restored = next(r for r in verdict.results if r.name == "primary_restored")
    checks.check("degradation_reported", not restored.passed and "primary not restored" in restored.detail
                 and bool(warning) and warning[0] in restored.detail,
                 f"the harness's judgement: {restored.line()}")
    checks.check("guest_on_standby", run.metrics.final_path == STANDBY and run.metrics.replies_after_resume > 0,
                 f"after resume: {run.metrics.replies_after_resume} replies, last ones on "
                 f"{run.metrics.final_path or 'no attributed reply'}")
    checks.verify()
