"""Parsing the guest's ``fo-state`` output (recorded from a real guest) into failover roles."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.guest import (
    NO_MASTER_GRACE_S,
    CommandResult,
    Guest,
    best_clock_sync,
    failover_link_events,
    failover_view,
    parse_dmesg,
    parse_link_state,
)

MAC = "52:54:00:fa:00:01"


def test_failover_with_primary_enslaved(data_dir: Path) -> None:
    view = failover_view(parse_link_state((data_dir / "fo-state-failover.txt").read_text()), MAC)
    assert view.master is not None and view.master.name == "eth0"
    assert view.standby is not None and view.standby.name == "eth1"
    assert view.primary is not None and view.primary.driver == "e1000e"
    assert view.primary_enslaved and view.primary_active


def test_primary_unplugged_during_migration(data_dir: Path) -> None:
    view = failover_view(parse_link_state((data_dir / "fo-state-primary-unplugged.txt").read_text()), MAC)
    assert view.master is not None and view.standby is not None
    assert view.primary is None
    assert not view.primary_enslaved
    assert "primary=none" in view.describe()


def test_primary_down_is_enslaved_but_not_active() -> None:
    text = (f"iface name=eth0 mac={MAC} driver=virtio_net master=- operstate=up carrier=1\n"
            f"iface name=eth1 mac={MAC} driver=virtio_net master=eth0 operstate=up carrier=1\n"
            f"iface name=eth2 mac={MAC} driver=e1000e master=eth0 operstate=down carrier=0\n")
    view = failover_view(parse_link_state(text), MAC)
    assert view.primary_enslaved and not view.primary_active


def test_no_failover_negotiated_reports_plain_devices() -> None:
    # failover=off: both NICs exist with the same MAC, nobody has a master.
    text = (f"iface name=eth0 mac={MAC} driver=virtio_net master=- operstate=up carrier=1\n"
            f"iface name=eth1 mac={MAC} driver=e1000e master=- operstate=up carrier=1\n")
    view = failover_view(parse_link_state(text), MAC)
    assert view.master is None
    assert view.standby is not None and view.primary is not None
    assert not view.primary_enslaved
    assert view.cannot_enslave and view.describe().endswith("(no failover master: the standby's device did not "
                                                            "offer failover)")


class _RecordedChannel:
    """Answers ``fo-state`` with recorded output, counting the calls."""

    def __init__(self, output: str) -> None:
        self.output, self.calls = output, 0

    def run(self, command: str, timeout: float) -> CommandResult:
        self.calls += 1
        return CommandResult(0, self.output)


def test_waiting_for_a_primary_ends_early_where_nothing_can_enslave_it(data_dir: Path) -> None:
    plain = f"iface name=eth0 mac={MAC} driver=virtio_net master=- operstate=up carrier=1\n"
    started = time.monotonic()
    view = Guest(_RecordedChannel(plain), MAC).wait_primary_active(timeout=30)  # type: ignore[arg-type]
    assert view.cannot_enslave and not view.primary_active
    assert NO_MASTER_GRACE_S <= time.monotonic() - started < NO_MASTER_GRACE_S + 1.5
    # A guest with failover but no primary yet is waited for, to the deadline.
    unplugged = _RecordedChannel((data_dir / "fo-state-primary-unplugged.txt").read_text())
    started = time.monotonic()
    Guest(unplugged, MAC).wait_primary_active(timeout=0.5)  # type: ignore[arg-type]
    assert time.monotonic() - started >= 0.5 and unplugged.calls > 2


def test_other_mac_is_not_the_primary() -> None:
    text = (f"iface name=eth0 mac={MAC} driver=virtio_net master=- operstate=up carrier=1\n"
            f"iface name=eth1 mac={MAC} driver=virtio_net master=eth0 operstate=up carrier=1\n"
            "iface name=eth2 mac=52:54:00:00:00:99 driver=e1000e master=- operstate=up carrier=1\n")
    view = failover_view(parse_link_state(text), MAC.upper())
    assert view.primary is None and not view.primary_enslaved


def test_failover_link_events_from_recorded_dmesg(data_dir: Path) -> None:
    events = failover_link_events((data_dir / "guest-dmesg-after-migration.txt").read_text())
    assert [(kind, iface) for _, kind, iface in events] == [
        ("standby-registered", "eth1"), ("primary-registered", "eth2"),
        ("primary-unregistered", "eth2"), ("primary-registered", "eth2")]
    assert events[2][0] == 7.570394


def test_clock_sync_picks_the_shortest_round_trip() -> None:
    samples = [(100.0, 6.18, 100.2), (100.3, 6.237, 100.34), (100.5, 6.29, 100.6)]
    sync = best_clock_sync(samples)
    assert sync.uncertainty_s == pytest.approx(0.02)
    assert sync.offset_s == pytest.approx(100.32 - 6.237)


def test_clock_sync_markers_parse_from_dmesg(data_dir: Path) -> None:
    stamps = [(ts, msg) for ts, msg in parse_dmesg((data_dir / "guest-dmesg-after-migration.txt").read_text())
              if msg.startswith("harness-sync-")]
    assert len(stamps) == 10 and stamps[0] == (6.18054, "harness-sync-1965881363030-0")
