"""For the recorder subprocesses: packet sockets with kernel receive timestamps (``SO_TIMESTAMPNS``),
and the stop request they obey."""

from __future__ import annotations

import signal
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


class StopRequest:
    """Set by SIGTERM or SIGINT once :meth:`on_signals` installed it; read as :attr:`requested`.

    A plain attribute, not a ``threading.Event``: ``Event.set()`` takes the lock
    that ``Event.wait()`` holds around its timed wait, so a handler that
    interrupts the main thread inside ``wait()`` deadlocks. A prober that looped
    on ``Event.wait`` ignored SIGTERM that way until it was killed.
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True

    def on_signals(self) -> StopRequest:
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, self)
        return self
