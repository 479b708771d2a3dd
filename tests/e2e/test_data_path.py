"""The data path on real namespaces, without QEMU: how the switch steers to a VM's NICs, and the probe recorder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_every_nic_of_the_vm_gets_the_guests_frames_and_no_other_vm_does(tmp_path: Path) -> None:
    # Steering like an SR-IOV NIC: whichever tap the guest last sent from, frames for its MAC
    # reach all of its NICs (net_failover picks the one in use); the switch learned the VM's
    # wire, so another VM's port (a destination not yet running) gets none.
    net = netns.TestNetwork("steer").create()
    try:
        net.add_nic_port("src", ["src-sby", "src-pri"])
        net.add_nic_port("dst", ["dst-sby", "dst-pri"])
        a = net.addressing
        listener = subprocess.Popen(
            [*net.bridge_ns.exec_prefix(), sys.executable, str(Path(__file__).with_name("tap_listen.py")),
             "--mac", a.failover_mac, "--seconds", "2", "--send-from", "src-pri", "src-sby", "src-pri", "dst-sby"],
            stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        prober = Prober(net.peer_ns.exec_prefix(), net.PEER_IF, a.peer_mac, a.peer_ip, a.guest_ip,
                        a.failover_mac, 200, tmp_path / "probes.jsonl")
        out, _ = listener.communicate(timeout=30)
        prober.result()
        counts = json.loads(out)
        assert counts["src-sby"] > 0 and counts["src-pri"] > 0, counts
        assert counts["dst-sby"] == 0, counts
        net.remove_nic_port("dst")
        assert "dst-wire" not in net.bridge_ns.run(["ip", "-o", "link"])
    finally:
        net.delete()
