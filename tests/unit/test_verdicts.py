"""The shared judgements on a migration recorded from a real flat run (TCG), as recorded and doctored."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.checks import CheckList, CheckResult
from harness.config import Thresholds
from harness.metrics import PRIMARY, migration_metrics
from harness.migration import MigrationResult
from harness.phases import migration_phases, phase_report
from harness.scenarios import MeasuredMigration
from harness.timeline import Timeline
from harness.verdicts import (
    Allowance,
    KnownBugSymptom,
    check_migration,
    check_probes,
    check_promise,
    verify_unless_known_bug,
)
from tests.conftest import load_json_gz


@pytest.fixture
def recorded(data_dir: Path) -> Timeline:
    return Timeline.from_dict(load_json_gz(data_dir / "flat-probes-1khz-tcg.timeline.json.gz"))


def _run(timeline: Timeline) -> MeasuredMigration:
    states = [e.data["status"] for e in timeline.events if e.vm == timeline.source and e.name == "MIGRATION"]
    result = MigrationResult("completed", states, timeline.window_start, timeline.window_end, timeline.query_migrate)
    return MeasuredMigration(result, timeline, migration_metrics(timeline), phase_report(timeline), None, None,
                             "running", [], True, {}, None, Path("timeline.png"))


def _judge(timeline: Timeline, name: str, promise: bool = False, limits: Thresholds | None = None) -> CheckResult:
    run = _run(timeline)
    checks = CheckList()
    if promise:
        check_promise(run, limits or Thresholds(), checks)
    else:
        check_migration(run, checks)
    return next(r for r in checks.results if r.name == name)


def test_wait_unplug_held_until_the_guest_released_its_primary(recorded: Timeline) -> None:
    held = _judge(recorded, "wait_unplug_held_until_release")
    assert held.passed, held.line()
    assert "86 ms after UNPLUG_PRIMARY, 166 ms before wait-unplug ended (± 26 ms)" in held.detail


def test_wait_unplug_left_before_the_release_fails(recorded: Timeline) -> None:
    # As QEMU 6.1 did with ACPI hotplug: wait-unplug over 4 ms after it began, long before the eject.
    events = list(recorded.events)
    i = next(i for i, e in enumerate(events) if e.vm == recorded.source and e.data.get("status") == "wait-unplug")
    j = next(j for j in range(i + 1, len(events)) if events[j].vm == recorded.source and events[j].name == "MIGRATION")
    events[j] = dataclasses.replace(events[j], ts=events[i].ts + 0.004)
    held = _judge(dataclasses.replace(recorded, events=events), "wait_unplug_held_until_release")
    assert not held.passed
    assert held.line().startswith("FAIL wait_unplug_held_until_release: guest released the primary 86 ms after "
                                  "UNPLUG_PRIMARY, -81 ms before wait-unplug ended (± 26 ms)")


def test_the_recorded_migration_keeps_the_promise_but_while_its_e1000e_came_up(recorded: Timeline) -> None:
    # Recorded with an e1000e primary: the guest waited for QEMU's emulated autonegotiation.
    lines = [_judge(recorded, name, promise=True).line() for name in (
        "standby_carried_on_source", "stop_copy_outage_within_downtime", "standby_carried_on_destination",
        "primary_took_over", "no_outage_after_restore")]
    assert [line.split()[0] for line in lines] == ["PASS", "PASS", "PASS", "FAIL", "PASS"], lines
    assert lines[1] == ("PASS stop_copy_outage_within_downtime: outage across stop-and-copy 175.9 ms (2 ms of it "
                        "before STOP, 44 ms after RESUME), limit 284.0 ms (QEMU's downtime 123 ms + tolerance "
                        "160 ms + probe interval 1.0 ms)")
    assert lines[3].startswith("FAIL primary_took_over: longest time without a reply 415.3 ms, limit 50 ms; "
                               "primary_coming_up lasted 475 ms: 473 of 475 probes lost")


def test_a_standby_that_carried_nothing_on_the_source_fails(recorded: Timeline) -> None:
    # The same migration with every reply of the source_standby phase taken out: a deaf standby.
    phase = next(p for p in migration_phases(recorded) if p.name == "source_standby")
    deaf = dataclasses.replace(recorded, replies=[r for r in recorded.replies if not phase.start <= r.t < phase.end],
                               paths=[p for p in recorded.paths if not phase.start <= p.t < phase.end])
    source = _judge(deaf, "standby_carried_on_source", promise=True)
    assert source.line().startswith("FAIL standby_carried_on_source: longest time without a reply 818.")
    assert "replies on the standby 0, on the primary 0" in source.detail
    outage = _judge(deaf, "stop_copy_outage_within_downtime", promise=True)
    assert not outage.passed and "ms of it before STOP" in outage.detail
    assert _judge(deaf, "standby_carried_on_destination", promise=True).passed


def test_a_stall_that_lost_nothing_is_told_from_loss(recorded: Timeline) -> None:
    # The after_restore phase's replies of its first second held back to its end: late, none lost.
    start = next(p for p in migration_phases(recorded) if p.name == "after_restore").start
    late = [dataclasses.replace(r, t=start + 1.0) if start <= r.t < start + 1.0 else r for r in recorded.replies]
    stalled = _judge(dataclasses.replace(recorded, replies=late), "no_outage_after_restore", promise=True)
    assert stalled.line().startswith("FAIL no_outage_after_restore: longest time without a reply 100"), stalled.line()
    assert stalled.detail.endswith("; a stall: every probe sent in it was answered, late") and stalled.held_back
    # Where probes were lost it is no stall: the deaf standby and the slow e1000e above.
    assert not _judge(recorded, "primary_took_over", promise=True).held_back


def test_an_allowance_widens_its_limits_only_and_each_widened_check_says_why(recorded: Timeline) -> None:
    # The recorded e1000e's 415 ms take-over, against 50 ms: a case allowing 400 ms for it passes, and says so.
    recorded_properties: dict[str, object] = {}
    checks = CheckList(recorded_properties.__setitem__)
    slow_nic = Allowance("an e1000e's autonegotiation", {"max_primary_coming_up_ms": 400.0})
    check_probes(_run(recorded), Thresholds(), checks, allowance=slow_nic)
    took_over = next(r for r in checks.results if r.name == "primary_took_over")
    assert took_over.line().startswith("PASS primary_took_over: longest time without a reply 415.3 ms, limit 450 ms "
                                       "(400 ms of it allowed: an e1000e's autonegotiation); "), took_over.line()
    assert recorded_properties["run.allowance"] == "max_primary_coming_up_ms +400 ms (an e1000e's autonegotiation)"
    assert recorded_properties["run.allowed_ms"] == {"max_primary_coming_up_ms": 400.0}  # for harness.limits
    assert [r.name for r in checks.results if "allowed" in r.detail] == ["primary_took_over"]
    with pytest.raises(ValueError, match=r"allowance for \['max_coming_up_ms'\]: not limits"):
        Allowance("a typo", {"max_coming_up_ms": 1.0})


def test_a_view_of_the_migration_is_judged_on_its_own_timeline(recorded: Timeline) -> None:
    # As the two-pair case views each pair: its phases and metrics come from the view's timeline (they
    # were once kept from the whole one, so pair 2 was judged on pair 1's probes).
    phase = next(p for p in migration_phases(recorded) if p.name == "source_standby")
    run = _run(recorded)
    view = run.seen_in(dataclasses.replace(recorded, replies=[r for r in recorded.replies
                                                              if not phase.start <= r.t < phase.end]))
    assert run.phases["source_standby"].probes_lost < 10
    assert view.phases["source_standby"].probes_lost > 800  # of 818: the last was answered after the phase
    assert view.metrics.probes_lost > run.metrics.probes_lost
    assert view.phases == phase_report(view.timeline)


def test_a_primary_that_carried_as_it_registered_took_over(recorded: Timeline) -> None:
    # As with a VF (or the vmxnet3): the guest's registration placed at the first reply on the primary.
    first_on_primary = min(p.t for p in recorded.paths if p.path == PRIMARY and p.t > recorded.window_start + 2)
    events = [dataclasses.replace(g, t=first_on_primary + 0.003) if g.kind == "primary-registered" else g
              for g in recorded.guest_events]
    took_over = _judge(dataclasses.replace(recorded, guest_events=events), "primary_took_over", promise=True)
    assert took_over.line().startswith("PASS primary_took_over: longest time without a reply 0.0 ms, limit 50 ms; "
                                       "primary_coming_up lasted 0 ms: 0 of 0 probes lost"), took_over.line()


def test_a_primary_that_never_carried_did_not_take_over(recorded: Timeline) -> None:
    resume = next(p for p in migration_phases(recorded) if p.name == "destination_standby").start
    on_standby = dataclasses.replace(recorded, paths=[p for p in recorded.paths
                                                      if not (p.path == PRIMARY and p.t >= resume)])
    took_over = _judge(on_standby, "primary_took_over", promise=True)
    assert took_over.line() == ("FAIL primary_took_over: no reply left the guest on the primary after the resume "
                                "(replies on the standby 46 in 2665 ms of primary_coming_up), limit 50 ms")
    assert not _judge(on_standby, "no_outage_after_restore", promise=True).passed


def test_the_backstop_allows_at_least_the_outage_qemus_downtime_explains(recorded: Timeline) -> None:
    # QEMU's downtime 123 ms + tolerance 190 ms + one probe interval: 314 ms, above the limits given.
    checks = CheckList()
    check_probes(_run(recorded), Thresholds(max_gap_ms=100, max_probes_lost=50, stop_copy_tolerance_ms=190), checks)
    by_name = {r.name: r for r in checks.results}
    why = "stop-and-copy's: QEMU's downtime + tolerance + one probe interval"
    # 422 ms while the e1000e came up: more than stop-and-copy explains.
    assert by_name["max_gap_ms"].line() == f"FAIL max_gap_ms: measured 422.2 ms, limit 314 ms ({why})"
    assert by_name["probes_lost"].line() == f"FAIL probes_lost: measured 709.0, limit 313 (probes in {why})"
    checks = CheckList()
    check_probes(_run(recorded), Thresholds(max_gap_ms=500, max_probes_lost=800), checks)
    by_name = {r.name: r for r in checks.results}
    assert by_name["max_gap_ms"].line() == "PASS max_gap_ms: measured 422.2 ms, limit 500 ms"
    assert by_name["probes_lost"].line() == "PASS probes_lost: measured 709.0, limit 800"


def test_a_known_bug_absorbs_only_its_own_symptom() -> None:
    failed = CheckList()
    failed.check("migration_completed", False, "status failed")
    with pytest.raises(KnownBugSymptom, match="known bug's symptom .*Unknown ramblock"):
        verify_unless_known_bug(failed, "Unknown ramblock", ["error: Unknown ramblock \"0000:00:02.0/vmxnet3.rom\""])
    with pytest.raises(AssertionError) as other:  # the same failure without the symptom: a plain failure
        verify_unless_known_bug(failed, "Unknown ramblock", ["qemu: some other complaint"])
    assert not isinstance(other.value, KnownBugSymptom)
    passed = CheckList()
    passed.check("migration_completed", True, "completed")
    verify_unless_known_bug(passed, "Unknown ramblock", ["Unknown ramblock in an old line"])  # no failure: no raise
    # A check the bug does not explain (the case's own recovery) keeps its failure a failure.
    failed.check("recovery.source_kept_running", False, "source VM status after the attempt: paused")
    with pytest.raises(AssertionError) as unexplained:
        verify_unless_known_bug(failed, "Unknown ramblock", ["error: Unknown ramblock"], never_absorbed=("recovery.",))
    assert not isinstance(unexplained.value, KnownBugSymptom)
    assert "FAIL recovery.source_kept_running" in str(unexplained.value)


def test_a_known_bug_that_explains_named_checks_absorbs_only_their_failure() -> None:
    # The VF-postcopy bug explains the primary's return, nothing of the standby's part.
    returned = CheckList()
    returned.check("primary_restored", False, "primary not restored")
    returned.check("standby_carried_on_destination", True, "longest time without a reply 25 ms")
    explains = {"primary_restored", "failback_ms"}
    symptom, evidence = "vfio_container_dma_map", ["warning: vfio_container_dma_map(...) = -14 (Bad address)"]
    with pytest.raises(KnownBugSymptom):
        verify_unless_known_bug(returned, symptom, evidence, explains=explains)
    returned.check("standby_carried_on_destination_loss", False, "frames lost while replies kept coming")
    with pytest.raises(AssertionError) as unexplained:
        verify_unless_known_bug(returned, symptom, evidence, explains=explains)
    assert not isinstance(unexplained.value, KnownBugSymptom)
    assert "FAIL standby_carried_on_destination_loss" in str(unexplained.value)


def test_a_release_placed_just_before_the_request_counts_at_the_request(recorded: Timeline) -> None:
    # As in a make check run under load: the guest's "unregistered" line placed on the host clock
    # 1 ms before UNPLUG_PRIMARY (within the sync's ± 26 ms), once read as "not seen".
    unplug = next(e.ts for e in recorded.events if e.name == "UNPLUG_PRIMARY")
    events = [dataclasses.replace(g, t=unplug - 0.001) if g.kind == "primary-unregistered" else g
              for g in recorded.guest_events]
    early = dataclasses.replace(recorded, guest_events=events)
    held = _judge(early, "wait_unplug_held_until_release")
    assert held.passed and held.detail.startswith("guest released the primary 0 ms after UNPLUG_PRIMARY"), held.line()
    assert migration_metrics(early).primary_released_ms == 0.0
    beyond = [dataclasses.replace(g, t=unplug - 0.1) if g.kind == "primary-unregistered" else g
              for g in recorded.guest_events]  # 100 ms before: beyond the bound, not this release
    assert not _judge(dataclasses.replace(recorded, guest_events=beyond), "wait_unplug_held_until_release").passed


def test_a_standby_that_drops_most_frames_without_a_long_silence_fails_on_its_loss(recorded: Timeline) -> None:
    # The source_standby phase with nine replies in ten taken out, as a NIC steering the failover MAC to
    # a detached VF would leave it: no gap near the limit, most probes lost outside the longest gap.
    phase = next(p for p in migration_phases(recorded) if p.name == "source_standby")
    lossy = dataclasses.replace(recorded, replies=[r for r in recorded.replies
                                                   if not phase.start <= r.t < phase.end or r.seq % 10 == 0])
    source = _judge(lossy, "standby_carried_on_source", promise=True)
    assert not source.passed and not source.held_back, source.line()
    assert source.line().startswith(
        "FAIL standby_carried_on_source: longest time without a reply 15.4 ms, limit 150 ms"), source.line()
    assert ("736 of 818 probes lost, 722 of the 803 sent outside its longest gap (89.9 %, limit 10 %; a path "
            "losing 10 % loses as many in fewer than 1 in 10000 phases, so this is not chance)") in source.detail
    assert source.detail.endswith("; frames lost while replies kept coming: more than its limit allows")
    healthy = _judge(recorded, "standby_carried_on_source", promise=True)
    assert healthy.passed and " %, limit 10 %)" in healthy.detail, healthy.line()


def test_scattered_loss_above_its_limit_fails_only_beyond_chance(recorded: Timeline) -> None:
    # Against a 0.5 % limit, the recorded source_standby phase (5 of the 808 probes outside its longest
    # gap lost) with 2 and then 20 more replies taken out, spread over the phase: 0.9 % is what a path
    # losing 0.5 % loses in one phase of nine, 3.1 % is not (as 3 of 26, 11.5 %, was within 10 % in a
    # short nested phase, where one probe is 4 %).
    phase = next(p for p in migration_phases(recorded) if p.name == "source_standby")
    strict = Thresholds(max_source_standby_scattered_loss_pct=0.5)

    def losing(every: int) -> Timeline:
        return dataclasses.replace(recorded, replies=[r for r in recorded.replies if not (
            phase.start + 0.05 <= r.t < phase.end - 0.05 and r.seq % every == 0)])

    few = _judge(losing(400), "standby_carried_on_source", promise=True, limits=strict)
    assert few.passed, few.line()
    assert "7 of the 808 sent outside its longest gap (0.9 %, limit 0.5 %; a path losing 0.5 % loses as many " \
           "in 11.44% of phases, so this may be chance)" in few.detail, few.detail
    many = _judge(losing(36), "standby_carried_on_source", promise=True, limits=strict)
    assert not many.passed, many.line()
    assert "25 of the 808 sent outside its longest gap (3.1 %, limit 0.5 %; a path losing 0.5 % loses as many in " \
           "fewer than 1 in 10000 phases, so this is not chance)" in many.detail, many.detail


def test_loss_inside_the_longest_gap_is_the_gaps_to_judge(recorded: Timeline) -> None:
    # One 100 ms stretch of the destination_standby phase unanswered (under its 120 ms limit), as a
    # destination that takes a while after RESUME to be reached: much of the phase lost, all in that gap.
    phase = next(p for p in migration_phases(recorded) if p.name == "destination_standby")
    silent = dataclasses.replace(recorded, replies=[r for r in recorded.replies
                                                    if not phase.start + 0.2 <= r.t < phase.start + 0.3])
    destination = _judge(silent, "standby_carried_on_destination", promise=True)
    assert destination.passed, destination.line()
    assert "outside its longest gap (2." in destination.detail, destination.detail
