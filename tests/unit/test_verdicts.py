"""The shared judgements on a migration recorded from a real flat run (TCG), as recorded and doctored."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.checks import CheckList, CheckResult
from harness.metrics import migration_metrics
from harness.migration import MigrationResult
from harness.scenarios import MeasuredMigration
from harness.timeline import Timeline
from harness.verdicts import check_migration
from tests.conftest import load_json_gz


@pytest.fixture
def recorded(data_dir: Path) -> Timeline:
    return Timeline.from_dict(load_json_gz(data_dir / "flat-probes-1khz-tcg.timeline.json.gz"))


def _judge(timeline: Timeline, name: str) -> CheckResult:
    states = [e.data["status"] for e in timeline.events if e.vm == timeline.source and e.name == "MIGRATION"]
    result = MigrationResult("completed", states, timeline.window_start, timeline.window_end, timeline.query_migrate)
    run = MeasuredMigration(result, timeline, migration_metrics(timeline), None, None, "running", [], True, {},
                            None, Path("timeline.png"))
    checks = CheckList()
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
