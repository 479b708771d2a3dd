"""The probe frame: an ICMP echo request carrying a 64-bit sequence number.

Pure functions and the standard library only, shared by the sender in the
peer namespace and the path capture in the bridge namespace (also on a lab
host's python3). The template frame is built once by the harness, with scapy
(:func:`harness.traffic.probe.build_template`); per probe only the sequence
fields and the ICMP checksum change, so a 1 kHz stream costs microseconds per
probe, not a scapy build.
"""

from __future__ import annotations

import struct

MAGIC = b"FOHX"
ICMP_ID = 0xF0A1
ETH_HLEN = 14
ETHERTYPE_IPV4 = 0x0800
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
_PAYLOAD_LEN = len(MAGIC) + 8


def internet_checksum(data: bytes | bytearray) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmp_offset(frame: bytes | bytearray) -> int:
    return ETH_HLEN + (frame[ETH_HLEN] & 0x0F) * 4


def stamp(template: bytearray, seq: int) -> bytes:
    """The template with sequence *seq* in the ICMP header (mod 2^16) and payload (64-bit)."""
    off = _icmp_offset(template)
    struct.pack_into("!H", template, off + 2, 0)  # checksum, recomputed below
    struct.pack_into("!H", template, off + 6, seq & 0xFFFF)
    struct.pack_into("!Q", template, off + 8 + len(MAGIC), seq)
    struct.pack_into("!H", template, off + 2, internet_checksum(template[off:]))
    return bytes(template)


def parse_probe(frame: bytes, want_type: int = ICMP_ECHO_REPLY, src_ip: bytes | None = None) -> int | None:
    """Sequence number of a harness probe frame of ICMP type *want_type* (from *src_ip*), else None."""
    if len(frame) < ETH_HLEN + 20 + 8 + _PAYLOAD_LEN:
        return None
    if struct.unpack_from("!H", frame, 12)[0] != ETHERTYPE_IPV4 or frame[ETH_HLEN + 9] != 1:
        return None
    if src_ip is not None and frame[ETH_HLEN + 12:ETH_HLEN + 16] != src_ip:
        return None
    off = _icmp_offset(frame)
    icmp_type, _, _, icmp_id = struct.unpack_from("!BBHH", frame, off)
    if icmp_type != want_type or icmp_id != ICMP_ID or frame[off + 8:off + 8 + len(MAGIC)] != MAGIC:
        return None
    return int(struct.unpack_from("!Q", frame, off + 8 + len(MAGIC))[0])
