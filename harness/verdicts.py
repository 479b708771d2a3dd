"""Judgements shared by conformance cases: each is a set of named checks on a :class:`CheckList`.

A case composes these with its own checks; keeping them here means "the
primary was restored" or "traffic is back on the primary" mean the same in
every case, and a harness test proving a check can fail covers every case
that uses it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.capabilities import qemu_version
from harness.checks import CheckList
from harness.config import RunConfig, Thresholds
from harness.metrics import PRIMARY
from harness.phases import PhaseStats, probe_interval_ms
from harness.report import record_metrics, record_phases, record_timeline
from harness.scenarios import MeasuredMigration, measure_migration
from harness.stats import binomial_tail
from harness.topologies import FailoverBed
from harness.topologies.devices import PRIMARY_ID, STANDBY_ID


def check_failover_ready(bed: FailoverBed, config: RunConfig, checks: CheckList) -> None:
    negotiated = [e for e in bed.source.qmp.events if e.name == "FAILOVER_NEGOTIATED"]
    checks.check("failover_negotiated", any(e.data.get("device-id") == STANDBY_ID for e in negotiated),
                 f"FAILOVER_NEGOTIATED events on the source: {[e.data for e in negotiated] or 'none'}")
    before = bed.guest.wait_primary_active(config.thresholds.primary_restore_deadline_s)
    checks.check("primary_enslaved_before_migration", before.primary_active, before.describe())


def check_unplug_primary_emitted(run: MeasuredMigration, checks: CheckList, primary_id: str = PRIMARY_ID) -> None:
    """QEMU asked the guest to release *primary_id* (``UNPLUG_PRIMARY`` on the source), whatever came of it."""
    unplugs = [e for e in run.timeline.events if e.vm == run.timeline.source and e.name == "UNPLUG_PRIMARY"]
    checks.check("unplug_primary_emitted", any(e.data.get("device-id") == primary_id for e in unplugs),
                 f"UNPLUG_PRIMARY on the source: {[e.data for e in unplugs] or 'none'}")


def check_migration(run: MeasuredMigration, checks: CheckList, primary_id: str = PRIMARY_ID) -> None:
    """The QMP contract and the primary's return, common to every migration case."""
    result, m = run.result, run.metrics
    destination_said = "; QEMU on the destination said: " + " | ".join(run.destination_messages)
    completed = result.status == "completed"
    checks.check("migration_completed", completed,
                 f"status {result.status}, states {result.states}"
                 + (f", error {result.query.get('error-desc')}" if result.query.get("error-desc") else "")
                 + (f", cancelled by the harness: {result.cancel_reason}" if result.cancel_reason else "")
                 + ("" if completed or not run.destination_messages else destination_said))
    check_unplug_primary_emitted(run, checks, primary_id)
    checks.check("wait_unplug_entered", "wait-unplug" in result.states,
                 f"source states {result.states}; wait-unplug lasted "
                 + (f"{m.unplug_wait_ms:.0f} ms" if m.unplug_wait_ms is not None else "-"))
    # QEMU must hold the migration in wait-unplug until the guest let go of its
    # primary; the guest's own log says when (placed on the host clock ± bound).
    bound_ms = (run.timeline.clock_uncertainty_s or 0.0) * 1000.0
    margin = m.release_before_unplug_end_ms
    if "wait-unplug" in result.states:
        checks.check("wait_unplug_held_until_release", margin is not None and margin >= -bound_ms,
                     f"guest released the primary {m.primary_released_ms:.0f} ms after UNPLUG_PRIMARY, "
                     f"{margin:.0f} ms before wait-unplug ended (± {bound_ms:.0f} ms)"
                     if margin is not None and m.primary_released_ms is not None
                     else "the guest's release of the primary was not seen in its kernel log, or could not be "
                     "placed on the host clock (the guest's clock was not synced before the migration)")
    if not completed:
        restored_ok, detail = False, "migration did not complete"
    elif run.restored is not None:
        restored_ok, detail = run.restored.primary_active, run.restored.describe()
    else:
        restored_ok, detail = False, run.restore_error or "guest not reachable"
    if not restored_ok and run.destination_messages:
        detail += destination_said
    checks.check("primary_restored", restored_ok,
                 ("primary enslaved with the failover MAC and up: " if restored_ok else "primary not restored: ")
                 + detail)


def record_migration(record_property: Any, run: MeasuredMigration, prefix: str = "") -> None:
    """Record *run*'s metrics (``metric.<prefix><name>``, with the outage across stop-and-copy) and
    what each of its phases saw (``phase.<prefix><phase>.<name>``)."""
    record_metrics(record_property, run.metrics, prefix)
    outage = run.phases.stop_copy_outage
    record_property(f"metric.{prefix}stop_copy_outage_ms", None if outage is None else round(outage.ms, 3))
    record_phases(record_property, run.phases.stats, prefix)


def measure_and_record(bed: FailoverBed, config: RunConfig, artifacts: Path, record_property: Any, checks: CheckList,
                       **options: Any) -> MeasuredMigration:
    """Check the bed is ready, migrate (*options* as :func:`measure_migration`), record what was measured."""
    check_failover_ready(bed, config, checks)
    run = measure_migration(bed, config, artifacts, **options)
    record_migration(record_property, run)
    record_timeline(record_property, run.timeline)
    if run.timeline.clock_uncertainty_s is not None:
        # Guest link events are placed on the host clock with this offset, within ± this bound.
        record_property("run.guest_clock_offset_s", round(run.timeline.clock_offset_s or 0.0, 6))
        record_property("run.guest_clock_uncertainty_ms", round(run.timeline.clock_uncertainty_s * 1000, 2))
    return run


def check_back_on_primary(run: MeasuredMigration, checks: CheckList, primary_id: str = PRIMARY_ID) -> None:
    """Traffic before, the migration's QMP contract and the primary's return, then traffic again, on the primary."""
    m = run.metrics
    checks.check("probe_baseline", run.baseline_reply, "the peer reached the guest before migrating"
                 if run.baseline_reply else "no probe reply before migration: the data path was down already")
    check_migration(run, checks, primary_id)
    checks.check("replies_resumed", m.replies_after_resume > 0,
                 f"{m.replies_after_resume} probe replies after the destination resumed")
    checks.check("traffic_back_on_primary", m.final_path == PRIMARY,
                 f"the last replies travelled on: {m.final_path or 'no attributed reply'} "
                 f"(primary {m.replies_on_primary}, standby {m.replies_on_standby}, "
                 f"unattributed {m.replies_unattributed} in the window)")


@dataclass(frozen=True)
class Allowance:
    """Milliseconds a case's own conditions add to some of :func:`check_probes`' limits, and why.

    Where a case provokes an outage that failover's promise does not forbid (auto-converge stalling
    the vCPU, postcopy's faults of pages still at the source), it states how much and why, here,
    rather than loosening the limits for every case: each widened check names the allowance in its
    detail, and the run records it (``run.allowance``)."""

    why: str = ""
    extra_ms: Mapping[str, float] = field(default_factory=dict)  # a Thresholds field: milliseconds added

    def __post_init__(self) -> None:
        unknown = sorted(set(self.extra_ms) - set(Thresholds.model_fields))
        if unknown:
            raise ValueError(f"allowance for {unknown}: not limits (fields of Thresholds)")

    def widen(self, limits: Thresholds) -> Thresholds:
        return limits.model_copy(update={name: getattr(limits, name) + ms for name, ms in self.extra_ms.items()})

    def said(self, limit: str) -> str:
        """What the allowance adds to *limit* (a Thresholds field), for a check's detail; "" if nothing."""
        ms = self.extra_ms.get(limit, 0.0)
        return f"{ms:g} ms of it allowed: {self.why}" if ms else ""

    @property
    def added_ms(self) -> dict[str, float]:
        """The limits this allowance widens, with the milliseconds it adds (the zero ones left out)."""
        return {name: ms for name, ms in self.extra_ms.items() if ms}

    def recorded(self) -> str:
        return "; ".join(f"{name} +{ms:g} ms" for name, ms in self.added_ms.items()) + f" ({self.why})"


NOTHING_ALLOWED = Allowance()


def _why(*reasons: str) -> str:
    return "; ".join(reason for reason in reasons if reason)


def _with_allowed(figure: str, allowed: str) -> str:
    """*figure* (a limit, a tolerance) followed by what of it an allowance added, if anything."""
    return figure + (f" ({allowed})" if allowed else "")


def _limit_ms(limit_ms: float, allowed: str) -> str:
    return _with_allowed(f"limit {limit_ms:g} ms", allowed)


def check_probes(run: MeasuredMigration, limits: Thresholds, checks: CheckList, primary_id: str = PRIMARY_ID,
                 allowance: Allowance = NOTHING_ALLOWED) -> None:
    """What the probes saw: baseline, recovery, loss, gaps, and which path carried the traffic; *limits*
    widened by the case's *allowance*, which each widened check names."""
    if allowance.added_ms:
        checks.record(f"run.{checks.prefix}allowance", allowance.recorded())
        # What each limit was widened by, for harness.limits: a default is derived from what it is compared with.
        checks.record(f"run.{checks.prefix}allowed_ms", allowance.added_ms)
    said, limits = allowance.said, allowance.widen(limits)
    m = run.metrics
    check_back_on_primary(run, checks, primary_id)
    # The backstop never fails what failover's promise allows: an outage as long as QEMU's own
    # downtime (+ tolerance), however long that downtime was.
    stop_copy_ms, interval = _stop_copy_limit_ms(run, limits)
    lost_in_stop_copy = math.floor(stop_copy_ms / interval) if stop_copy_ms and interval else 0
    why = "stop-and-copy's: QEMU's downtime + tolerance + one probe interval"
    checks.at_most("probes_lost", m.probes_lost, max(limits.max_probes_lost, lost_in_stop_copy),
                   why="probes in " + why if lost_in_stop_copy > limits.max_probes_lost else "")
    gap_ms = max(limits.max_gap_ms, stop_copy_ms or 0.0)
    checks.at_most("max_gap_ms", m.max_gap_ms, gap_ms, " ms",
                   _why(why if gap_ms > limits.max_gap_ms else "", said("max_gap_ms")))
    checks.at_most("switch_to_standby_ms", m.switch_to_standby_ms, limits.max_switch_to_standby_ms, " ms",
                   said("max_switch_to_standby_ms"))
    checks.at_most("failback_ms", m.failback_ms, limits.max_failback_ms, " ms", said("max_failback_ms"))
    check_promise(run, limits, checks, allowance)


# A phase's scattered loss fails its limit only when a path that loses exactly the limit's share would
# lose as many less often than this: a phase of 30 probes that loses 3 (10 %) is not a lossy standby,
# one of 1000 that loses 130 is (nested phases are short: a TCG L1 dropped 3 of 26 in a healthy run).
SCATTERED_LOSS_SIGNIFICANCE = 0.01


def _chance(probability: float) -> str:
    return "in fewer than 1 in 10000 phases" if probability < 1e-4 else f"in {probability:.2%} of phases"


def _phase_check(checks: CheckList, name: str, stats: PhaseStats, limit_ms: float, allowed: str = "",
                 scattered_loss_limit_pct: float | None = None) -> None:
    """*stats*'s longest time without a reply against *limit_ms* (*allowed*: what of it a case's
    allowance added) and, given *scattered_loss_limit_pct*, its loss outside that gap against that, with
    what the phase saw."""
    limit = _limit_ms(limit_ms, allowed)
    scattered, loss_seen, loss_passed = stats.scattered_loss_pct, "", True
    if scattered is not None and scattered_loss_limit_pct is not None:
        lost, sent = stats.lost_outside_longest_gap, stats.sent_outside_longest_gap
        chance = binomial_tail(lost, sent, scattered_loss_limit_pct / 100.0)
        loss_passed = chance >= SCATTERED_LOSS_SIGNIFICANCE
        beyond = "" if scattered <= scattered_loss_limit_pct else (
            f"; a path losing {scattered_loss_limit_pct:g} % loses as many {_chance(chance)}, "
            + ("so this may be chance" if loss_passed else "so this is not chance"))
        loss_seen = (f", {lost} of the {sent} sent outside its longest gap "
                     f"({scattered:.1f} %, limit {scattered_loss_limit_pct:g} %{beyond})")
    seen = (f"; {stats.phase.name} lasted {stats.phase.ms:.0f} ms: {stats.probes_lost} of {stats.probes_sent} "
            f"probes lost{loss_seen}, replies on the standby {stats.replies_on_standby}, on the primary "
            f"{stats.replies_on_primary}")
    if stats.max_gap_ms is None:
        checks.check(name, False, f"not measured: no {stats.phase.name} phase in the timeline ({limit})")
        return
    gap_passed = stats.max_gap_ms <= limit_ms
    held_back = not gap_passed and loss_passed and stats.lost_in_longest_gap == 0
    checks.check(name, gap_passed and loss_passed,
                 f"longest time without a reply {stats.max_gap_ms:.1f} ms, {limit}{seen}"
                 + ("" if loss_passed else "; frames lost while replies kept coming: more than its limit allows")
                 + ("; a stall: every probe sent in it was answered, late" if held_back else ""), held_back=held_back)


def check_promise(run: MeasuredMigration, limits: Thresholds, checks: CheckList,
                  allowance: Allowance = NOTHING_ALLOWED) -> None:
    """Failover's promise, phase by phase: the standby carries while the primary is away, and the
    only outage is stop-and-copy, as long as QEMU's own downtime (harness.phases). *limits* are
    already widened by *allowance*, which each widened check names."""
    phases, said = run.phases, allowance.said
    _phase_check(checks, "standby_carried_on_source", phases["source_standby"], limits.max_source_standby_gap_ms,
                 said("max_source_standby_gap_ms"), limits.max_source_standby_scattered_loss_pct)
    check_stop_copy_outage(run, limits, checks, said("stop_copy_tolerance_ms"))
    _phase_check(checks, "standby_carried_on_destination", phases["destination_standby"],
                 limits.max_destination_standby_gap_ms, said("max_destination_standby_gap_ms"),
                 limits.max_destination_standby_scattered_loss_pct)
    _check_primary_took_over(checks, phases["primary_coming_up"], phases["after_restore"],
                             bool(run.timeline.paths), limits.max_primary_coming_up_ms,
                             said("max_primary_coming_up_ms"))
    _phase_check(checks, "no_outage_after_restore", phases["after_restore"], limits.max_gap_after_restore_ms,
                 said("max_gap_after_restore_ms"))


def _check_primary_took_over(checks: CheckList, coming_up: PhaseStats, after: PhaseStats, paths_captured: bool,
                             limit_ms: float, allowed: str) -> None:
    """From the guest's registration of its primary to the first reply on it: no outage longer than
    *limit_ms*, and (where the topology tells the paths) a reply on the primary at all."""
    if paths_captured and after.phase.ms == 0:  # after_restore starts with the first reply on the primary
        checks.check("primary_took_over", False, f"no reply left the guest on the primary after the resume "
                     f"(replies on the standby {coming_up.replies_on_standby} in {coming_up.phase.ms:.0f} ms "
                     f"of {coming_up.phase.name}), {_limit_ms(limit_ms, allowed)}")
    else:
        _phase_check(checks, "primary_took_over", coming_up, limit_ms, allowed)


def _stop_copy_limit_ms(run: MeasuredMigration, limits: Thresholds) -> tuple[float | None, float]:
    """The longest outage stop-and-copy may cause: QEMU's downtime + the tolerance + one probe
    interval (None when QEMU reported no downtime); and that probe interval (0 without probes)."""
    interval = probe_interval_ms(run.timeline) or 0.0
    downtime = run.metrics.downtime_ms
    return (None if downtime is None else downtime + limits.stop_copy_tolerance_ms + interval), interval


def check_stop_copy_outage(run: MeasuredMigration, limits: Thresholds, checks: CheckList, allowed: str = "") -> None:
    """The outage across stop-and-copy is QEMU's downtime, within a tolerance and one probe interval.

    Measured from the replies, so a standby that was silent before ``STOP`` or after ``RESUME``
    lengthens it: the detail says how much of it lay outside stop-and-copy.
    """
    outage = run.phases.stop_copy_outage
    limit, interval = _stop_copy_limit_ms(run, limits)
    if outage is None or limit is None:
        checks.check("stop_copy_outage_within_downtime", False,
                     "not measured: " + ("no stop-and-copy with probes in the timeline" if outage is None
                                         else "QEMU reported no downtime"))
        return
    stop_copy = run.phases["stop_copy"].phase
    tolerance = _with_allowed(f"tolerance {limits.stop_copy_tolerance_ms:g} ms", allowed)
    before = max(0.0, stop_copy.start - outage.start) * 1000.0
    after = max(0.0, outage.end - stop_copy.end) * 1000.0
    checks.check("stop_copy_outage_within_downtime", outage.ms <= limit,
                 f"outage across stop-and-copy {outage.ms:.1f} ms ({before:.0f} ms of it before STOP, "
                 f"{after:.0f} ms after RESUME), limit {limit:.1f} ms (QEMU's downtime {run.metrics.downtime_ms:g} ms "
                 f"+ {tolerance} + probe interval {interval:.1f} ms)")


class KnownBugSymptom(AssertionError):
    """A case failed with the symptom of a known QEMU bug (:func:`expect_known_qemu_bug`)."""


def expect_known_qemu_bug(request: pytest.FixtureRequest, qemu_binary: str, verified_through: tuple[int, int],
                          reason: str) -> None:
    """Mark this test a strict expected failure on QEMUs up to *verified_through*, where the bug is known.

    Only the bug's own symptom is expected (:func:`verify_unless_known_bug` raises
    :class:`KnownBugSymptom`): any other failure stays a failure. Strict: the day such a QEMU
    passes, the case fails as XPASS and the gate must move.
    """
    version, _ = qemu_version(qemu_binary)
    if version is not None and version[:2] <= verified_through:
        request.applymarker(pytest.mark.xfail(strict=True, raises=KnownBugSymptom,
                                              reason=f"QEMU {'.'.join(map(str, version))}: {reason}"))


def verify_unless_known_bug(checks: CheckList, symptom: str, evidence: list[str],
                            never_absorbed: tuple[str, ...] = (), explains: Collection[str] | None = None) -> None:
    """Like ``checks.verify()``, but a failure whose *evidence* (QEMU's messages, or a check's
    detail) shows *symptom* raises :class:`KnownBugSymptom`, the one failure
    :func:`expect_known_qemu_bug` expects. Checks named with a prefix in *never_absorbed* judge
    what the bug does not explain (say, the case's own recovery), and given *explains*, so does every
    check not named in it: their failure stays a failure."""
    __tracebackhide__ = True
    seen = [line for line in evidence if symptom in line]
    unexplained = [r for r in checks.failed if (never_absorbed and r.name.startswith(never_absorbed))
                   or (explains is not None and r.name not in explains)]
    if checks.failed and seen and not unexplained:
        raise KnownBugSymptom(f"{len(checks.failed)} of {len(checks.results)} checks failed with the known bug's "
                              f"symptom ({seen[0]}):\n" + "\n".join(r.line() for r in checks.failed))
    checks.verify()
