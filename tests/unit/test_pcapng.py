"""pcapng evidence: frames read back by scapy with their interface name, time, direction and truncation."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import PcapNgReader

from harness.traffic.capture_main import involves
from harness.traffic.pcapng import PcapNgWriter


def _probe(seq: int, payload_len: int = 16) -> bytes:
    frame = Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(id=0x4242, seq=seq) / (b"x" * payload_len)
    return bytes(frame)


def _block_types(data: bytes) -> list[int]:
    types, offset = [], 0
    while offset < len(data):
        block_type, length = struct.unpack_from("<II", data, offset)
        assert struct.unpack_from("<I", data, offset + length - 4)[0] == length
        types.append(block_type)
        offset += length
    return types


def test_frames_read_back_with_interface_time_and_direction(tmp_path: Path) -> None:
    written = [
        (_probe(1), "src-pri", 1700000000.000001, False),
        (_probe(2, payload_len=200), "src-sby", 1700000000.250002, True),
        (_probe(3, payload_len=1), "src-pri", 1700000001.999999, True),
    ]
    path = tmp_path / "capture.pcapng"
    with path.open("wb") as f:
        writer = PcapNgWriter(f, snaplen=128)
        for frame, ifname, ts, outgoing in written:
            writer.write(frame, ifname, ts, outgoing)
        writer.flush()
    assert len(written[1][0]) > 128

    with PcapNgReader(str(path)) as reader:
        packets = list(reader)
        names = [options["name"] for _, _, options in reader.interfaces]
    assert names == [b"src-pri", b"src-sby"]
    assert len(packets) == len(written)
    for pkt, (frame, ifname, ts, outgoing) in zip(packets, written, strict=True):
        assert bytes(pkt) == frame[:128]
        assert pkt.wirelen == len(frame)
        assert round(pkt.time * 1_000_000) == round(ts * 1_000_000)
        assert pkt.sniffed_on == ifname
        assert pkt.direction == (2 if outgoing else 1)
    assert packets[0][ICMP].seq == 1


def test_interface_described_once(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcapng"
    with path.open("wb") as f:
        writer = PcapNgWriter(f)
        for seq, ifname in enumerate(["a", "b", "a", "b", "a"]):
            writer.write(_probe(seq), ifname, 1700000000.0 + seq, outgoing=False)
    assert _block_types(path.read_bytes()) == [0x0A0D0D0A, 1, 6, 1, 6, 6, 6, 6]


def test_capture_keeps_the_guests_frames_and_arp_only() -> None:
    guest = socket.inet_aton("198.18.0.2")
    assert involves(_probe(1), guest)  # to the guest
    assert involves(bytes(Ether() / IP(src="198.18.0.2", dst="198.18.0.1") / ICMP()), guest)  # from it
    assert involves(bytes(Ether() / ARP(psrc="198.18.0.1", pdst="198.18.0.9")), guest)  # any ARP
    assert not involves(bytes(Ether() / IP(src="198.18.1.1", dst="198.18.1.2") / ICMP()), guest)  # second pair
    assert not involves(bytes(Ether(type=0x86DD) / (b"\0" * 40)), guest)  # not IPv4
