"""Placing the guest's failover link events on the host clock around a migration's pause (recorded dmesg)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.guest import ClockSync
from harness.scenarios import guest_link_events

# The recorded guest: primary registered at 4.34 s, unregistered at 7.57 s (the unplug before the
# migration), registered again at 9.68 s (on the destination). Its clock pauses for 5 s: the
# source stops at host time 1008 (guest 8.0) and the guest resumes at 1013 (still guest 8.0).
BEFORE = ClockSync(offset_s=1000.0, uncertainty_s=0.01)
AFTER = ClockSync(offset_s=1005.0, uncertainty_s=0.01)
STOP, RESUME = 1008.0, 1013.0


@pytest.fixture
def dmesg(data_dir: Path) -> str:
    return (data_dir / "guest-dmesg-after-migration.txt").read_text()


def _placed(dmesg: str, before: ClockSync | None, after: ClockSync | None,
            resume: float | None = RESUME) -> list[tuple[str, float]]:
    return [(e.kind, round(e.t, 2)) for e in guest_link_events(dmesg, before, after, STOP, resume)
            if e.kind.startswith("primary")]


def test_each_sync_places_the_events_on_its_side_of_the_pause(dmesg: str) -> None:
    assert _placed(dmesg, BEFORE, AFTER) == [("primary-registered", 1004.34), ("primary-unregistered", 1007.57),
                                             ("primary-registered", 1014.68)]


def test_without_the_sync_after_events_after_the_pause_are_left_out(dmesg: str) -> None:
    assert _placed(dmesg, BEFORE, None) == [("primary-registered", 1004.34), ("primary-unregistered", 1007.57)]


def test_without_the_sync_before_events_before_the_pause_are_left_out_not_misplaced(dmesg: str) -> None:
    # Mapped with the sync after, the unplug would land at 1012.57: after STOP, 5 s late.
    assert _placed(dmesg, None, AFTER) == [("primary-registered", 1014.68)]


def test_without_a_pause_one_sync_places_everything(dmesg: str) -> None:
    events = guest_link_events(dmesg, None, AFTER, None)
    assert [round(e.t, 2) for e in events if e.kind.startswith("primary")] == [1009.34, 1012.57, 1014.68]
