"""The VF MAC policy's pure parts, on the source's QMP events of a recorded flat migration."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.migration import MigrationPlan
from harness.sriov.mac_policy import clearing_mac_when_released, pf_shares_mac, primary_released
from harness.timeline import QMPEvent, Timeline
from tests.conftest import load_json_gz


def _source_events(data_dir: Path) -> list[QMPEvent]:
    timeline = Timeline.from_dict(load_json_gz(data_dir / "flat-probes-1khz-tcg.timeline.json.gz"))
    return [e for e in timeline.events if e.vm == timeline.source]


def _upto(events: list[QMPEvent], status: str) -> list[QMPEvent]:
    """*events* up to and including the first MIGRATION *status*."""
    i = next(i for i, e in enumerate(events) if e.name == "MIGRATION" and e.data.get("status") == status)
    return events[:i + 1]


def test_the_primary_is_released_once_wait_unplug_was_passed(data_dir: Path) -> None:
    events = _source_events(data_dir)
    assert not primary_released(_upto(events, "setup"))
    assert primary_released(_upto(events, "active"))


def test_a_migration_without_wait_unplug_released_nothing(data_dir: Path) -> None:
    events = [e for e in _source_events(data_dir) if e.data.get("status") != "wait-unplug"]
    assert not primary_released(events)


def test_a_new_migration_forgets_the_previous_ones_release(data_dir: Path) -> None:
    events = _source_events(data_dir)
    setup = next(e for e in events if e.data.get("status") == "setup")
    assert not primary_released([*events, setup])  # a retry that has not reached wait-unplug yet


def test_clearing_comes_before_the_cases_own_hook_and_only_after_a_release(data_dir: Path) -> None:
    calls: list[str] = []
    plan = MigrationPlan(on_status={"active": lambda source, destination: calls.append("case")})
    hooked = clearing_mac_when_released(plan, lambda: calls.append("clear"))
    released = SimpleNamespace(qmp=SimpleNamespace(events=_upto(_source_events(data_dir), "active")))
    not_released = SimpleNamespace(qmp=SimpleNamespace(events=_upto(_source_events(data_dir), "setup")))
    source: Any = released
    hooked.on_status["active"](source, None)  # type: ignore[arg-type]
    source = not_released
    hooked.on_status["active"](source, None)  # type: ignore[arg-type]
    assert calls == ["clear", "case", "case"]


def test_only_the_shared_policy_puts_the_mac_in_the_pfs_filter() -> None:
    assert pf_shares_mac("shared") and not pf_shares_mac("vf-only") and not pf_shares_mac("cleared")
