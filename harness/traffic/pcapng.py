"""Minimal pcapng writer: keeps the probe traffic around a failure as evidence, with each interface's name,
so the user sees in Wireshark which tap carried a frame."""

from __future__ import annotations

import struct
from typing import BinaryIO

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_LINKTYPE_ETHERNET = 1
_IF_NAME, _IF_TSRESOL, _EPB_FLAGS = 2, 9, 2
_INBOUND, _OUTBOUND = 1, 2


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


_END_OF_OPTIONS = struct.pack("<HH", 0, 0)


class PcapNgWriter:
    """Writes Ethernet frames to a pcapng file, one interface description per interface name."""

    def __init__(self, f: BinaryIO, snaplen: int = 128) -> None:
        self._f = f
        self._snaplen = snaplen
        self._ids: dict[str, int] = {}
        self._block(_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))

    def write(self, frame: bytes, ifname: str, ts: float, outgoing: bool) -> None:
        ifid = self._ids.get(ifname)
        if ifid is None:
            ifid = self._ids[ifname] = len(self._ids)
            options = _option(_IF_NAME, ifname.encode()) + _option(_IF_TSRESOL, bytes([6])) + _END_OF_OPTIONS
            self._block(_IDB, struct.pack("<HHI", _LINKTYPE_ETHERNET, 0, self._snaplen) + options)
        micros = round(ts * 1_000_000)
        data = frame[: self._snaplen]
        flags = _option(_EPB_FLAGS, struct.pack("<I", _OUTBOUND if outgoing else _INBOUND))
        header = struct.pack("<IIIII", ifid, micros >> 32, micros & 0xFFFFFFFF, len(data), len(frame))
        self._block(_EPB, header + _pad(data) + flags + _END_OF_OPTIONS)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def _block(self, block_type: int, body: bytes) -> None:
        length = 12 + len(body)
        self._f.write(struct.pack("<II", block_type, length) + body + struct.pack("<I", length))
