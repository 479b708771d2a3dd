"""The probe recorder on a real bridge and veths (no QEMU): it stops on SIGTERM every time, with its record."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import netns
from harness.traffic.probe import Prober

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


@pytest.fixture
def network() -> Iterator[netns.TestNetwork]:
    """The harness's test network, with a namespace standing in for the guest behind a veth."""
    net = netns.TestNetwork("rec").create()
    guest = netns.Netns(netns.netns_name("rec-guest"))
    try:
        guest.create()
        a = net.addressing
        net.bridge_ns.run(["ip", "link", "add", "guest-port", "master", net.BRIDGE, "type", "veth",
                           "peer", "name", "eth0", "address", a.failover_mac, "netns", guest.name])
        net.bridge_ns.run(["ip", "link", "set", "guest-port", "up"])
        guest.run(["ip", "addr", "add", f"{a.guest_ip}/{a.prefix_len}", "dev", "eth0"])
        guest.run(["ip", "link", "set", "eth0", "up"])
        yield net
    finally:
        guest.delete()
        net.delete()


def test_prober_stops_on_sigterm_with_its_record(network: netns.TestNetwork, tmp_path: Path) -> None:
    # Repeated: a stop request that raced the sender's timed wait once deadlocked the
    # prober (threading.Event.set() in the signal handler), and the harness killed it.
    a = network.addressing
    for attempt in range(20):
        prober = Prober(network.peer_ns.exec_prefix(), network.PEER_IF, a.peer_mac, a.peer_ip, a.guest_ip,
                        a.failover_mac, 1000, tmp_path / f"probes-{attempt}.jsonl")
        assert prober.wait_reply(timeout=10) is not None, "no reply from the guest namespace"
        record = prober.result()  # SIGTERM; raises if the prober had to be killed
        assert record.stats["sent"] == len(record.sent) > 0
        # Replies keep being recorded after the last probe: its own is there.
        assert record.sent[-1].seq in {reply.seq for reply in record.replies}, attempt
