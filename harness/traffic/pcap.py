"""Reading classic pcap files, as ``tcpdump -w`` writes them on a lab host. Pure.

A capture stopped by a signal may end in a record cut short: that record is
dropped, the others are kept.
"""

from __future__ import annotations

import struct

LINKTYPE_ETHERNET = 1
# Magic number → (byte order, fraction units per second).
_MAGICS = {b"\xd4\xc3\xb2\xa1": ("<", 1e6), b"\xa1\xb2\xc3\xd4": (">", 1e6),
           b"\x4d\x3c\xb2\xa1": ("<", 1e9), b"\xa1\xb2\x3c\x4d": (">", 1e9)}
_FILE_HEADER = 24
_RECORD_HEADER = 16


def read_pcap(data: bytes) -> list[tuple[float, bytes]]:
    """(timestamp in epoch seconds, Ethernet frame) of each record; ValueError if *data* is not an
    Ethernet pcap."""
    if len(data) < _FILE_HEADER or data[:4] not in _MAGICS:
        raise ValueError(f"not a pcap file (starts {data[:4].hex() or 'empty'})")
    order, units = _MAGICS[data[:4]]
    (linktype,) = struct.unpack_from(f"{order}I", data, 20)
    if linktype & 0xFFFF != LINKTYPE_ETHERNET:
        raise ValueError(f"pcap link type {linktype}, not Ethernet ({LINKTYPE_ETHERNET})")
    records, offset = [], _FILE_HEADER
    while offset + _RECORD_HEADER <= len(data):
        seconds, fraction, captured, _ = struct.unpack_from(f"{order}IIII", data, offset)
        start = offset + _RECORD_HEADER
        if start + captured > len(data):
            break
        records.append((seconds + fraction / units, data[start:start + captured]))
        offset = start + captured
    return records
