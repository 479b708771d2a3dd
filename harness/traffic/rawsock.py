"""Packet sockets with kernel receive timestamps (``SO_TIMESTAMPNS``), for the probe subprocesses."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

SO_TIMESTAMPNS = 35
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_TS = struct.Struct("qq")


def open_packet_socket(iface: str | None = None) -> socket.socket:
    """A raw AF_PACKET socket on *iface* (all interfaces of the namespace if None), timestamping."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    if iface is not None:
        s.bind((iface, 0))
    return s


def receive(s: socket.socket) -> Iterator[tuple[bytes, str, int, float]]:
    """Yield (frame, interface, packet type, kernel receive time) until the socket times out or closes."""
    ancsize = socket.CMSG_SPACE(_TS.size)
    while True:
        try:
            data, anc, _, addr = s.recvmsg(2048, ancsize)
        except TimeoutError:
            return
        ts = 0.0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TS.unpack(payload[:_TS.size])
                ts = sec + nsec / 1e9
        yield data, addr[0], addr[2], ts
