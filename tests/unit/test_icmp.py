"""The probe frame: sequence stamping, checksum (checked by scapy) and parsing."""

from __future__ import annotations

import socket

from scapy.layers.inet import ICMP
from scapy.layers.l2 import Ether

from harness.traffic.icmp import ICMP_ECHO_REQUEST, ICMP_ID, parse_probe, stamp
from harness.traffic.probe import build_template

TEMPLATE_ARGS = ("02:00:00:00:00:01", "52:54:00:fa:00:01", "198.18.0.1", "198.18.0.2")


def test_stamp_sets_sequence_and_a_valid_checksum() -> None:
    template = build_template(*TEMPLATE_ARGS)
    for seq in (0, 1, 65535, 65536 + 7, 2**40):
        pkt = Ether(stamp(template, seq))
        icmp = pkt[ICMP]
        assert (icmp.type, icmp.id, icmp.seq) == (ICMP_ECHO_REQUEST, ICMP_ID, seq & 0xFFFF)
        checksum = icmp.chksum
        del icmp.chksum
        assert Ether(bytes(pkt))[ICMP].chksum == checksum
        assert parse_probe(bytes(pkt), want_type=ICMP_ECHO_REQUEST) == seq


def test_parse_rejects_other_frames() -> None:
    frame = stamp(build_template(*TEMPLATE_ARGS), 42)
    assert parse_probe(frame) is None  # a request is not a reply
    assert parse_probe(frame, want_type=ICMP_ECHO_REQUEST, src_ip=socket.inet_aton("198.18.0.9")) is None
    assert parse_probe(frame[:30], want_type=ICMP_ECHO_REQUEST) is None
    assert parse_probe(frame.replace(b"FOHX", b"XXXX"), want_type=ICMP_ECHO_REQUEST) is None
    reply = bytearray(frame)
    reply[34] = 0  # ICMP type: echo reply
    assert parse_probe(bytes(reply), src_ip=socket.inet_aton("198.18.0.1")) == 42
