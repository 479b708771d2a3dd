"""The ICMP timestamp exchange that puts an L1's QMP events on the harness's clock."""

from __future__ import annotations

import struct

from harness.traffic.clock_offset import (
    DAY_MS,
    ICMP_TIMESTAMP_REPLY,
    Sample,
    best_estimate,
    parse_timestamp_reply,
    timestamp_request,
)
from harness.traffic.icmp import internet_checksum

IPV4_HEADER = bytes([0x45]) + bytes(19)


def reply(ident: int, seq: int, receive_ms: int, kind: int = ICMP_TIMESTAMP_REPLY) -> bytes:
    return IPV4_HEADER + struct.pack("!BBHHHIII", kind, 0, 0, ident, seq, 0, receive_ms, receive_ms)


def test_request_is_a_valid_icmp_timestamp_request() -> None:
    packet = timestamp_request(0x1234, 7, now=1_000_000.25)
    kind, code, _, ident, seq, originate, _, _ = struct.unpack("!BBHHHIII", packet)
    assert (kind, code, ident, seq) == (13, 0, 0x1234, 7)
    assert originate == 1_000_000_250 % DAY_MS
    assert internet_checksum(packet) == 0  # a correct checksum sums the packet to zero


def test_reply_is_parsed_only_for_our_identifier_and_type() -> None:
    assert parse_timestamp_reply(reply(0x1234, 3, 5000), 0x1234) == (3, 5000)
    assert parse_timestamp_reply(reply(0x9999, 3, 5000), 0x1234) is None
    assert parse_timestamp_reply(reply(0x1234, 3, 5000, kind=0), 0x1234) is None
    assert parse_timestamp_reply(IPV4_HEADER + b"\x0e\x00", 0x1234) is None


def test_offset_is_against_the_middle_of_the_round_trip() -> None:
    sample = Sample(sent=86_400 * 10 + 100.000, received=86_400 * 10 + 100.010, their_ms=100_000 + 500)
    assert abs(sample.offset() - 0.495) < 1e-6


def test_offset_across_midnight_is_small_not_a_day() -> None:
    just_before = 86_400 * 10 - 0.002  # ours: 23:59:59.998
    sample = Sample(sent=just_before, received=just_before + 0.002, their_ms=3)  # theirs: 00:00:00.003
    assert abs(sample.offset() - 0.004) < 1e-6
    behind = Sample(sent=86_400 * 10 + 0.001, received=86_400 * 10 + 0.001, their_ms=DAY_MS - 9)
    assert abs(behind.offset() + 0.010) < 1e-6


def test_best_estimate_takes_the_shortest_round_trip() -> None:
    slow = Sample(100.0, 100.2, their_ms=100_000 + 900)  # queued somewhere: a worse estimate
    fast = Sample(101.0, 101.002, their_ms=101_000 + 501)
    offset, uncertainty = best_estimate([slow, fast])
    assert abs(offset - 0.500) < 1e-6
    assert abs(uncertainty - 0.0015) < 1e-9
