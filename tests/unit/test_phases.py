"""A migration's phases and what the probes saw in each: on a timeline recorded from a real flat
migration (TCG, 1 kHz probes), and on hand-made edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.metrics import migration_metrics
from harness.phases import PHASE_NAMES, migration_phases, phase_report, probe_interval_ms
from harness.timeline import GuestLinkEvent, PathSeen, ProbeReply, ProbeSent, QMPEvent, Timeline
from tests.conftest import load_json_gz


@pytest.fixture
def probes_1khz(data_dir: Path) -> Timeline:
    return Timeline.from_dict(load_json_gz(data_dir / "flat-probes-1khz-tcg.timeline.json.gz"))


def test_phases_cover_the_window_in_order_at_the_events(probes_1khz: Timeline) -> None:
    phases = migration_phases(probes_1khz)
    assert [p.name for p in phases] == list(PHASE_NAMES)
    assert phases[0].start == probes_1khz.window_start and phases[-1].end == probes_1khz.window_end
    assert all(a.end == b.start for a, b in zip(phases, phases[1:], strict=False))
    unplug = next(e.ts for e in probes_1khz.events if e.name == "UNPLUG_PRIMARY")
    offsets = [round(p.end - unplug, 3) for p in phases[:-1]]
    # UNPLUG_PRIMARY; the guest's "unregistered" line 86 ms later; STOP; the destination's RESUME
    # 130 ms after it; the guest's "registered" line 1.29 s after that; the first reply on the
    # primary 1.77 s after the resume (failback_ms).
    assert offsets == [0.0, 0.086, 0.904, 1.034, 2.328, 2.802]
    assert phases[4].ms + phases[5].ms == pytest.approx(migration_metrics(probes_1khz).failback_ms, abs=0.01)


def test_every_probe_and_reply_is_counted_in_exactly_one_phase(probes_1khz: Timeline) -> None:
    stats, m = phase_report(probes_1khz).stats, migration_metrics(probes_1khz)
    assert sum(s.probes_sent for s in stats) == m.probes_sent
    assert sum(s.probes_lost for s in stats) == m.probes_lost == 709
    assert sum(s.replies_on_standby for s in stats) == m.replies_on_standby
    assert sum(s.replies_on_primary for s in stats) == m.replies_on_primary


def test_the_recorded_flat_migration_phase_by_phase(probes_1khz: Timeline) -> None:
    """Where this healthy flat migration (recorded before the flat topology gave each QEMU a NIC of
    its own) lost its probes: not only in stop-and-copy (130 ms, every probe lost) but 473 while the
    guest's primary came up on the destination, after the standby had carried; none of the lost
    requests got a reply out of the guest."""
    by_name = phase_report(probes_1khz)
    stop_copy, dest, coming_up = by_name["stop_copy"], by_name["destination_standby"], by_name["primary_coming_up"]
    assert (stop_copy.probes_sent, stop_copy.probes_lost) == (130, 130)
    assert stop_copy.max_gap_ms == pytest.approx(129.9, abs=0.1)
    assert (dest.probes_lost, dest.replies_on_standby, dest.replies_on_primary) == (28, 1221, 0)
    assert dest.max_gap_ms == pytest.approx(44.5, abs=0.1)
    assert (coming_up.probes_lost, coming_up.lost_inbound, coming_up.lost_outbound) == (473, 473, 0)
    assert coming_up.max_gap_ms == pytest.approx(415.3, abs=0.1)
    source = by_name["source_standby"]
    assert (source.probes_lost, source.replies_on_standby, source.replies_on_primary) == (5, 812, 0)
    assert by_name["after_restore"].replies_on_standby == 0


def _timeline(events: list[tuple[str, str, float, dict[str, str]]], sent: list[float],
              replies: list[tuple[int, float]], paths: list[tuple[int, float, str]],
              released: float | None = None) -> Timeline:
    return Timeline(
        source="src", destination="dst", window_start=0.0, window_end=10.0,
        events=[QMPEvent(vm, name, data, ts) for vm, name, ts, data in events],
        sent=[ProbeSent(i, t) for i, t in enumerate(sent)],
        replies=[ProbeReply(seq, t) for seq, t in replies],
        paths=[PathSeen(seq, t, path) for seq, t, path in paths],
        guest_events=[GuestLinkEvent(released, 0.0, "primary-unregistered", "eth2")] if released is not None else [])


MIGRATION = [("src", "UNPLUG_PRIMARY", 1.0, {}), ("src", "MIGRATION", 1.0, {"status": "wait-unplug"}),
             ("src", "MIGRATION", 2.0, {"status": "active"}), ("src", "STOP", 4.0, {}),
             ("dst", "RESUME", 5.0, {})]


def test_without_the_guests_word_the_release_is_the_end_of_wait_unplug() -> None:
    phases = migration_phases(_timeline(MIGRATION, [], [], [(9, 6.0, "primary")]))
    assert [(p.start, p.end) for p in phases] == [(0, 1), (1, 2), (2, 4), (4, 5), (5, 6), (6, 6), (6, 10)]
    told = migration_phases(_timeline(MIGRATION, [], [], [(9, 6.0, "primary")], released=1.5))
    assert told[1].end == 1.5


def test_a_missing_boundary_empties_its_phase_and_never_reorders() -> None:
    no_failover = [e for e in MIGRATION if e[1] != "UNPLUG_PRIMARY" and e[3].get("status") != "wait-unplug"]
    phases = migration_phases(_timeline(no_failover, [], [], []))
    # No UNPLUG_PRIMARY: baseline runs to STOP; never back on the primary: destination_standby to the end.
    assert [(p.name, p.start, p.end) for p in phases] == [
        ("baseline", 0, 4), ("switch", 4, 4), ("source_standby", 4, 4), ("stop_copy", 4, 5),
        ("destination_standby", 5, 10), ("primary_coming_up", 10, 10), ("after_restore", 10, 10)]


def test_loss_direction_where_the_path_was_captured() -> None:
    """Probe 1's request never reached the guest; probe 2's reply left the guest on the standby and
    was lost on the way back; probe 3 was answered. All three sent during source_standby."""
    timeline = _timeline(MIGRATION, [0.5, 2.5, 2.6, 2.7], [(0, 0.6), (3, 2.8)],
                         [(0, 0.55, "primary"), (2, 2.65, "standby"), (3, 2.75, "standby")])
    source = phase_report(timeline)["source_standby"]
    assert (source.probes_sent, source.probes_lost, source.lost_inbound, source.lost_outbound) == (3, 2, 1, 1)
    assert (source.replies_on_standby, source.replies_on_primary) == (2, 0)
    assert source.max_gap_ms == pytest.approx(1200.0)  # 2.8 → STOP at 4.0


def test_without_a_path_capture_no_direction_is_claimed_and_without_probes_no_gap() -> None:
    unseen = _timeline(MIGRATION, [2.5], [], [])
    source = phase_report(unseen)["source_standby"]
    assert (source.probes_lost, source.lost_inbound, source.lost_outbound) == (1, 0, 0)
    assert all(s.max_gap_ms is None for s in phase_report(_timeline(MIGRATION, [], [], [])).stats)


def test_the_stop_copy_outage_is_the_reply_gap_across_it(probes_1khz: Timeline) -> None:
    # QEMU said 123 ms of downtime; the probes saw 176 ms without a reply across stop-and-copy:
    # 1.5 ms before STOP, the 130 ms phase, and 44 ms after RESUME until the standby answered.
    report = phase_report(probes_1khz)
    outage, phase = report.stop_copy_outage, report["stop_copy"].phase
    assert outage is not None
    assert report.figures()["stop_copy_outage_ms"] == outage.ms
    assert outage.ms == pytest.approx(175.9, abs=0.1)
    assert (phase.start - outage.start) * 1000 == pytest.approx(1.5, abs=0.1)
    assert (outage.end - phase.end) * 1000 == pytest.approx(44.5, abs=0.1)
    assert probe_interval_ms(probes_1khz) == pytest.approx(1.0, abs=0.01)


def test_no_stop_copy_outage_without_probes_or_a_stop() -> None:
    assert phase_report(_timeline(MIGRATION, [], [], [])).stop_copy_outage is None  # nothing probed
    no_stop = [e for e in MIGRATION if e[1] not in ("STOP", "RESUME")]
    assert phase_report(_timeline(no_stop, [0.5], [(0, 0.6)], [])).stop_copy_outage is None
