"""Metrics on timelines recorded from real flat migrations (TCG), and on hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.metrics import final_path, max_gap_ms_of, migration_metrics, probe_stats, state_duration_ms
from harness.timeline import GuestLinkEvent, PathSeen, ProbeReply, ProbeSent, QMPEvent, ThroughputInterval, Timeline
from tests.conftest import load_json_gz


def _load(path: Path) -> Timeline:
    return Timeline.from_dict(load_json_gz(path))


@pytest.fixture
def probes_1khz(data_dir: Path) -> Timeline:
    return _load(data_dir / "flat-probes-1khz-tcg.timeline.json.gz")


def test_recorded_probe_migration(probes_1khz: Timeline) -> None:
    m = migration_metrics(probes_1khz)
    # From the QMP events: UNPLUG_PRIMARY .849613, wait-unplug .851086, STOP 57.753866, RESUME 57.883746.
    assert m.unplug_wait_ms == pytest.approx(250.134, abs=0.01)
    assert m.observed_downtime_ms == pytest.approx(129.880, abs=0.01)
    assert (m.downtime_ms, m.total_time_ms, m.setup_time_ms) == (123.0, 1028.0, 252.0)
    assert (m.probes_sent, m.probes_lost, m.duplicates, m.reordered) == (4995, 709, 0, 46)
    assert m.max_gap_ms == pytest.approx(422.169, abs=0.01)
    assert m.outage_count == 4 and m.longest_outage_ms == pytest.approx(479.991, abs=0.01)
    # Per path, as captured on the taps: the standby took over 14 ms after UNPLUG_PRIMARY,
    # and the primary carried traffic again 1.77 s after the destination resumed.
    assert m.switch_to_standby_ms == pytest.approx(14.123, abs=0.01)
    assert m.failback_ms == pytest.approx(1768.295, abs=0.01)
    assert m.standby_time_ms == pytest.approx(2788.305, abs=0.01)
    assert (m.replies_on_primary, m.replies_on_standby, m.replies_unattributed) == (2201, 2086, 0)
    assert m.final_path == "primary"
    assert m.throughput_mean_mbps is None


def test_recorded_iperf3_migration(data_dir: Path) -> None:
    m = migration_metrics(_load(data_dir / "flat-iperf3-tcg.timeline.json.gz"))
    assert m.probes_sent == 0 and m.max_gap_ms is None  # no probes in the iperf3 case: no gap claimed
    assert m.throughput_min_mbps == 0.0  # the stream stalled across the switch
    assert m.throughput_mean_mbps == pytest.approx(300.558, abs=0.01)
    assert m.throughput_after_resume_mbps == pytest.approx(350.759, abs=0.01)  # RESUME to the end of the stream
    assert m.throughput_stall_ms == pytest.approx(600.02, abs=0.01)


def test_recorded_tcp_backoff_past_the_window(data_dir: Path) -> None:
    # A CI run: the sender's segments were lost across the switch to the standby, TCP backed
    # off (retransmits 0.1, 0.5, 1.4 s after UNPLUG_PRIMARY) and only its retry at +3.0 s got
    # through, 0.3 s after the observation window ended (primary back + 0.5 s).
    m = migration_metrics(_load(data_dir / "flat-iperf3-tcp-backoff-tcg.timeline.json.gz"))
    assert m.throughput_mean_mbps == 0.0  # nothing inside the window
    assert m.throughput_stall_ms == pytest.approx(3200.4, abs=0.5)
    assert m.throughput_after_resume_mbps == pytest.approx(361.565, abs=0.01)  # the stream did resume


def test_timeline_round_trips_through_json(probes_1khz: Timeline) -> None:
    assert Timeline.from_dict(json.loads(json.dumps(probes_1khz.to_dict()))) == probes_1khz


def _timeline(sent: list[float], replies: list[tuple[int, float]], **kw: object) -> Timeline:
    return Timeline(source="src", destination="dst", window_start=10.0, window_end=20.0,
                    sent=[ProbeSent(i, t) for i, t in enumerate(sent)],
                    replies=[ProbeReply(s, t) for s, t in replies], **kw)  # type: ignore[arg-type]


def test_outages_are_runs_of_lost_probes_in_send_time() -> None:
    sent = [10.0 + i * 0.001 for i in range(10)]
    answered = [0, 1, 2, 6, 7, 8]  # 3..5 lost, 9 lost up to the window's end
    t = _timeline(sent, [(s, sent[s] + 0.0005) for s in answered])
    stats = probe_stats(t)
    assert (stats.sent, stats.lost) == (10, 4)
    assert [(o.start, o.end) for o in stats.outages] == [(sent[3], sent[6]), (sent[9], 20.0)]
    assert stats.outages[0].ms == pytest.approx(3.0)


def test_duplicates_and_reordering() -> None:
    t = _timeline([10.0, 10.1, 10.2], [(0, 10.01), (2, 10.21), (1, 10.22), (2, 10.23)])
    stats = probe_stats(t)
    assert (stats.lost, stats.duplicates, stats.reordered) == (0, 1, 1)


def test_gap_spans_whole_window_without_replies() -> None:
    t = _timeline([10.0 + i for i in range(10)], [])
    assert max_gap_ms_of(t) == pytest.approx(10_000.0)
    assert migration_metrics(t).probes_lost == 10


def test_gap_counts_window_edges_and_ignores_replies_outside() -> None:
    t = _timeline([9.0, 11.0, 12.0], [(0, 9.5), (1, 11.001), (2, 19.0)])
    # Boundaries: 10 → 11.001 → 19.0 → 20: longest 7.999 s.
    assert max_gap_ms_of(t) == pytest.approx(7999.0)


def test_missing_events_give_none_not_zero() -> None:
    m = migration_metrics(_timeline([11.0], [(0, 11.1)]))
    assert m.unplug_wait_ms is None and m.observed_downtime_ms is None and m.downtime_ms is None
    assert m.switch_to_standby_ms is None and m.failback_ms is None and m.final_path is None


def test_path_metrics() -> None:
    events = [QMPEvent("src", "UNPLUG_PRIMARY", {"device-id": "primary0"}, 11.0),
              QMPEvent("dst", "RESUME", {}, 13.0)]
    sent = [10.5, 11.2, 12.0, 13.5, 14.0]
    replies = [(i, t + 0.001) for i, t in enumerate(sent)]
    paths = [PathSeen(0, 10.501, "primary"), PathSeen(1, 11.201, "standby"), PathSeen(2, 12.001, "standby"),
             PathSeen(3, 13.501, "standby"), PathSeen(4, 14.001, "primary")]
    m = migration_metrics(_timeline(sent, replies, events=events, paths=paths))
    assert m.switch_to_standby_ms == pytest.approx(201.0)
    assert m.failback_ms == pytest.approx(1001.0)
    assert m.standby_time_ms == pytest.approx(2800.0)
    assert (m.replies_on_primary, m.replies_on_standby) == (2, 3)


def test_final_path_needs_a_clean_tail() -> None:
    sent = [10.0 + i * 0.01 for i in range(30)]
    replies = [(i, t + 0.001) for i, t in enumerate(sent)]
    on_primary = [PathSeen(i, t, "primary") for i, t in enumerate(sent)]
    assert final_path(_timeline(sent, replies, paths=on_primary)) == "primary"
    stray = [*on_primary[:-1], PathSeen(29, sent[29], "standby")]
    assert final_path(_timeline(sent, replies, paths=stray)) == "mixed"


def test_throughput_after_resume() -> None:
    intervals = [ThroughputInterval(10 + i * 0.1, 10.1 + i * 0.1, 100e6 if i < 20 else 10e6) for i in range(40)]
    events = [QMPEvent("dst", "RESUME", {}, 12.0)]
    m = migration_metrics(Timeline("src", "dst", 10.0, 14.0, events=events, throughput=intervals))
    assert m.throughput_mean_mbps == pytest.approx(55.0)
    assert m.throughput_min_mbps == pytest.approx(10.0)
    assert m.throughput_after_resume_mbps == pytest.approx(10.0)  # the interval straddling RESUME does not count
    assert m.throughput_stall_ms == 0.0
    stalled = [ThroughputInterval(i.start, i.end, 0.0 if 15 <= n < 25 else i.bits_per_second)
               for n, i in enumerate(intervals)]
    assert migration_metrics(Timeline("src", "dst", 10.0, 14.0, events=events,
                                      throughput=stalled)).throughput_stall_ms == pytest.approx(1000.0)


def test_state_duration_needs_a_following_state() -> None:
    events = [QMPEvent("src", "MIGRATION", {"status": "wait-unplug"}, 11.0)]
    t = Timeline("src", "dst", 10.0, 20.0, events=events)
    assert state_duration_ms(t, "src", "wait-unplug") is None
    events.append(QMPEvent("src", "MIGRATION", {"status": "active"}, 11.25))
    assert state_duration_ms(t, "src", "wait-unplug") == pytest.approx(250.0)
    events.insert(1, QMPEvent("dst", "MIGRATION", {"status": "active"}, 11.1))  # the destination never counts
    assert state_duration_ms(t, "src", "wait-unplug") == pytest.approx(250.0)


def test_release_of_the_primary_against_wait_unplug(probes_1khz: Timeline) -> None:
    m = migration_metrics(probes_1khz)
    # The guest logged "failover primary slave:eth2 unregistered" 86 ms after UNPLUG_PRIMARY,
    # 166 ms before QEMU left wait-unplug: QEMU waited for it, as it must.
    assert m.primary_released_ms == pytest.approx(86.051, abs=0.01)
    assert m.release_before_unplug_end_ms == pytest.approx(165.555, abs=0.01)


def test_wait_unplug_left_before_the_guest_released_its_primary() -> None:
    # What QEMU 6.1 did with q35's ACPI hotplug (fixed in 6.2, "failover: fix unplug
    # pending detection"): out of wait-unplug at once, the guest lets go of its primary later.
    t = Timeline(source="src", destination="dst", window_start=0.0, window_end=10.0, events=[
        QMPEvent("src", "UNPLUG_PRIMARY", {"device-id": "primary0"}, 1.000),
        QMPEvent("src", "MIGRATION", {"status": "wait-unplug"}, 1.001),
        QMPEvent("src", "MIGRATION", {"status": "active"}, 1.005),
    ], guest_events=[GuestLinkEvent(1.250, 8.0, "primary-unregistered", "eth2")])
    m = migration_metrics(t)
    assert m.primary_released_ms == pytest.approx(250.0)
    assert m.release_before_unplug_end_ms == pytest.approx(-245.0)
