"""Path capture, run as a subprocess inside the namespace that holds the data-path interfaces.

Listens on every interface of the namespace and records, for each probe reply
leaving the guest, the interface it appeared on, mapped to a path name by
``--port PATTERN=PATH`` (shell patterns, first match wins, for example
``*-pri=primary``). Interfaces created later (a destination's taps) are seen too. Output: JSON lines
``{"p": seq, "t": time, "path": "primary", "if": "src-pri"}``. With ``--pcap``,
every ICMP frame to or from the guest's address (the probes), and every ARP
frame, is also written to a pcapng file (evidence; the harness keeps it only
for failed cases). Nothing else reaches it (a kernel filter, see
:func:`~harness.traffic.rawsock.open_packet_socket`).

    python -m harness.traffic.capture_main --guest-ip 198.18.0.2 --port '*-pri=primary' --port '*-sby=standby'
"""

from __future__ import annotations

import argparse
import fnmatch
import socket
import sys

from harness.traffic.icmp import parse_probe
from harness.traffic.pcapng import PcapNgWriter
from harness.traffic.rawsock import PACKET_OUTGOING, StopRequest, open_packet_socket, receive


def involves(frame: bytes, ip: bytes) -> bool:
    """An ARP frame, or an IPv4 packet from or to *ip* (untagged Ethernet)."""
    ethertype = frame[12:14]
    if ethertype == b"\x08\x06":
        return True
    return ethertype == b"\x08\x00" and ip in (frame[26:30], frame[30:34])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capture_main")
    parser.add_argument("--guest-ip", required=True)
    parser.add_argument("--port", action="append", default=[], metavar="PATTERN=PATH")
    parser.add_argument("--pcap", metavar="FILE", help="also write the guest's frames and ARP here (pcapng)")
    args = parser.parse_args(argv)
    patterns = [tuple(p.split("=", 1)) for p in args.port]
    paths: dict[str, str | None] = {}

    def path_of(ifname: str) -> str | None:
        if ifname not in paths:
            paths[ifname] = next((path for pattern, path in patterns if fnmatch.fnmatchcase(ifname, pattern)), None)
        return paths[ifname]

    guest_ip = socket.inet_aton(args.guest_ip)

    pcap = PcapNgWriter(open(args.pcap, "wb")) if args.pcap else None  # noqa: SIM115 (closed below)
    sock = open_packet_socket()
    sock.settimeout(0.2)
    stop = StopRequest().on_signals()
    print('{"ready": true}', flush=True)
    while not stop.requested:
        for frame, ifname, pkttype, ts in receive(sock):
            if stop.requested:  # first: under steady traffic, receive() may never run dry
                break
            if pcap is not None and involves(frame, guest_ip):
                pcap.write(frame, ifname, ts, outgoing=pkttype == PACKET_OUTGOING)
            # A reply from the guest enters the namespace on the tap it was sent through.
            path = path_of(ifname)
            if pkttype == PACKET_OUTGOING or path is None:
                continue
            seq = parse_probe(frame, src_ip=guest_ip)
            if seq is not None:
                sys.stdout.write(f'{{"p": {seq}, "t": {ts:.6f}, "path": "{path}", "if": "{ifname}"}}\n')
    sys.stdout.flush()
    if pcap is not None:
        pcap.close()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
