"""For the recorder subprocesses: packet sockets with kernel receive timestamps (``SO_TIMESTAMPNS``),
and the stop request they obey."""

from __future__ import annotations

import ctypes
import signal
import socket
import struct
from collections.abc import Iterator

SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_TS = struct.Struct("qq")


# Classic BPF: accept ARP and IPv4 ICMP frames, drop the rest (``ether proto arp or icmp``).
_ARP_OR_ICMP = (
    (0x28, 0, 0, 12),      # ldh [12]           ethertype
    (0x15, 3, 0, 0x0806),  # jeq ARP            -> accept
    (0x15, 0, 3, 0x0800),  # jeq IPv4, else     -> drop
    (0x30, 0, 0, 23),      # ldb [23]           IP protocol
    (0x15, 0, 1, 1),       # jeq ICMP, else     -> drop
    (0x06, 0, 0, 0x40000),  # accept (whole frame)
    (0x06, 0, 0, 0),       # drop
)
_FILTER_CODE = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in _ARP_OR_ICMP))


def open_packet_socket(iface: str | None = None) -> socket.socket:
    """A raw AF_PACKET socket on *iface* (all interfaces of the namespace if None), timestamping.

    It receives ARP and ICMP frames only: the kernel filters out the rest (an
    iperf3 stream's frames, seen on every port they cross), which the
    recorders would otherwise have to read and discard in Python, and under
    load fail to, dropping probe replies with them.
    """
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    program = struct.pack("HL", len(_ARP_OR_ICMP), ctypes.addressof(_FILTER_CODE))  # struct sock_fprog
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
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
