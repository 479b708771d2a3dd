"""read_pcap on a capture tcpdump wrote: five harness probe replies leaving a guest's address."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from harness.traffic.icmp import parse_probe
from harness.traffic.pcap import read_pcap

GUEST = socket.inet_aton("198.18.0.2")


def test_probe_replies_in_a_tcpdump_capture(data_dir: Path) -> None:
    records = read_pcap((data_dir / "standby-tap-probe-replies.pcap").read_bytes())
    assert [parse_probe(frame, src_ip=GUEST) for _, frame in records] == [0, 1, 2, 3, 4]
    times = [t for t, _ in records]
    assert times == sorted(times) and 0.015 < times[1] - times[0] < 0.025  # 50 probes a second
    assert 1.7e9 < times[0] < 1.9e9


def test_a_record_cut_short_is_dropped(data_dir: Path) -> None:
    data = (data_dir / "standby-tap-probe-replies.pcap").read_bytes()
    assert len(read_pcap(data[:-10])) == 4


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not a pcap file (starts empty)"),
    (b"\x0a\x0d\x0d\x0a" + bytes(40), "not a pcap file (starts 0a0d0d0a)"),  # pcapng: not this reader's
    (b"\xd4\xc3\xb2\xa1" + bytes(16) + b"\x71\x00\x00\x00", "pcap link type 113, not Ethernet (1)"),
])
def test_what_is_not_an_ethernet_pcap_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_pcap(data)
