"""Metrics on a timeline recorded from a real flat migration (TCG), and on hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.metrics import max_gap_ms, migration_metrics, state_duration_ms
from harness.timeline import ProbeSample, QMPEvent, Timeline


@pytest.fixture
def recorded(data_dir: Path) -> Timeline:
    return Timeline.from_dict(json.loads((data_dir / "flat-migration-tcg.timeline.json").read_text()))


def test_recorded_migration_metrics(recorded: Timeline) -> None:
    m = migration_metrics(recorded)
    # From the QMP events: wait-unplug at .087117, active at .337319.
    assert m.unplug_wait_ms == pytest.approx(250.202, abs=0.01)
    # Source STOP at 44.99363, destination RESUME at 45.128855.
    assert m.observed_downtime_ms == pytest.approx(135.225, abs=0.01)
    assert (m.downtime_ms, m.total_time_ms, m.setup_time_ms) == (126.0, 1036.0, 253.0)
    assert m.probes_sent == 412
    assert m.probes_lost == 131
    assert m.max_gap_ms == pytest.approx(526.372, abs=0.01)
    assert m.replies_after_resume == 198


def test_timeline_round_trips_through_json(recorded: Timeline) -> None:
    assert Timeline.from_dict(json.loads(json.dumps(recorded.to_dict()))) == recorded


def _timeline(probes: list[ProbeSample], events: list[QMPEvent] | None = None) -> Timeline:
    return Timeline(source="src", destination="dst", window_start=10.0, window_end=20.0,
                    events=events or [], probes=probes)


def test_gap_spans_whole_window_without_replies() -> None:
    t = _timeline([ProbeSample(i, 10.0 + i) for i in range(10)])
    assert max_gap_ms(t) == pytest.approx(10_000.0)
    m = migration_metrics(t)
    assert (m.probes_sent, m.probes_lost, m.replies_after_resume) == (10, 10, 0)


def test_gap_counts_window_edges_and_ignores_replies_outside() -> None:
    probes = [ProbeSample(0, 9.0, 9.5), ProbeSample(1, 11.0, 11.001), ProbeSample(2, 12.0, 19.0)]
    # Boundaries: 10 → 11.001 → 19.0 → 20: longest 7.999 s.
    assert max_gap_ms(_timeline(probes)) == pytest.approx(7999.0)


def test_missing_events_give_none_not_zero() -> None:
    m = migration_metrics(_timeline([ProbeSample(0, 11.0, 11.1)]))
    assert m.unplug_wait_ms is None
    assert m.observed_downtime_ms is None
    assert m.downtime_ms is None


def test_state_duration_needs_a_following_state() -> None:
    events = [QMPEvent("src", "MIGRATION", {"status": "wait-unplug"}, 11.0)]
    assert state_duration_ms(_timeline([], events), "src", "wait-unplug") is None
    events.append(QMPEvent("src", "MIGRATION", {"status": "active"}, 11.25))
    assert state_duration_ms(_timeline([], events), "src", "wait-unplug") == pytest.approx(250.0)
    # The destination's states never count for the source.
    events.insert(1, QMPEvent("dst", "MIGRATION", {"status": "active"}, 11.1))
    assert state_duration_ms(_timeline([], events), "src", "wait-unplug") == pytest.approx(250.0)
