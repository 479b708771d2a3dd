"""Parsing the guest's ``fo-state`` output (recorded from a real guest) into failover roles."""

from __future__ import annotations

from pathlib import Path

from harness.guest import failover_view, parse_link_state

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


def test_other_mac_is_not_the_primary() -> None:
    text = (f"iface name=eth0 mac={MAC} driver=virtio_net master=- operstate=up carrier=1\n"
            f"iface name=eth1 mac={MAC} driver=virtio_net master=eth0 operstate=up carrier=1\n"
            "iface name=eth2 mac=52:54:00:00:00:99 driver=e1000e master=- operstate=up carrier=1\n")
    view = failover_view(parse_link_state(text), MAC.upper())
    assert view.primary is None and not view.primary_enslaved
