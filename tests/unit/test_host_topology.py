"""The host topology's pure parts: the guest's address beside the peer's, and interface names."""

from __future__ import annotations

from ipaddress import IPv4Interface

import pytest

from harness.errors import ConfigError
from harness.topologies.host import guest_addressing, short_name


def test_the_guest_takes_the_address_after_the_peers() -> None:
    addressing = guest_addressing(IPv4Interface("198.18.4.1/24"), "52:54:00:fa:10:01", "aa:bb:cc:dd:ee:ff")
    assert (addressing.peer_ip, addressing.guest_ip, addressing.prefix_len) == ("198.18.4.1", "198.18.4.2", 24)
    assert (addressing.failover_mac, addressing.peer_mac) == ("52:54:00:fa:10:01", "aa:bb:cc:dd:ee:ff")


def test_the_second_pairs_guest_takes_the_second_address_after_the_peers() -> None:
    addressing = guest_addressing(IPv4Interface("198.18.4.1/24"), "52:54:00:fa:10:02", "aa:bb:cc:dd:ee:ff", 1)
    assert (addressing.guest_ip, addressing.failover_mac) == ("198.18.4.3", "52:54:00:fa:10:02")
    with pytest.raises(ConfigError, match=r"^peer\.address: 198.18.4.253/24 leaves no address for the guest of "
                                          r"pair 2 after it in 198.18.4.0/24$"):
        guest_addressing(IPv4Interface("198.18.4.253/24"), "52:54:00:fa:10:02", "aa:bb:cc:dd:ee:ff", 1)


@pytest.mark.parametrize("peer", ["198.18.0.254/24", "198.18.0.255/24", "198.18.0.1/32"])
def test_a_peer_address_that_leaves_none_for_the_guest_is_refused(peer: str) -> None:
    with pytest.raises(ConfigError, match=r"^peer\.address: .* leaves no address for the guest"):
        guest_addressing(IPv4Interface(peer), "52:54:00:fa:10:01", "aa:bb:cc:dd:ee:ff")


def test_interface_names_fit_the_kernels_limit_and_differ_per_bed_and_role() -> None:
    names = {short_name(tag, role) for tag in ("m-1", "m-2", "gw3-17") for role in ("src", "dst")}
    assert len(names) == 6 and all(len(name) <= 15 and name.startswith("fohx") for name in names)
