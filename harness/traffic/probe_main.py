"""Probe sender/receiver, run as a subprocess inside the peer namespace.

scapy has no namespace support and ``setns`` is per thread, so the probe runs
in its own process started with ``ip netns exec``. It sends sequence-numbered
ICMP echo requests (:mod:`harness.traffic.icmp`) to the guest on a fixed
schedule and records every reply with the kernel's receive timestamp. Output
is JSON lines on stdout, ``{"s": seq, "t": sent}`` and ``{"r": seq, "t":
received}``, then a ``{"stats": ...}`` line with its own CPU time. It stops on
SIGTERM or SIGINT, after flushing.

    python -m harness.traffic.probe_main --iface peer0 --template HEX --dst-ip .. --rate 1000

The frame (``--template``, hex) is built by the harness (:func:`harness.traffic.probe.build_template`,
with scapy), so this program needs only the standard library: it also runs on a lab host's own
python3 (:mod:`harness.lab.remote_command`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

from harness.traffic.icmp import parse_probe, stamp
from harness.traffic.rawsock import PACKET_OUTGOING, StopRequest, open_packet_socket, receive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe_main")
    parser.add_argument("--iface", required=True)
    parser.add_argument("--template", required=True, help="the echo request frame with sequence 0, in hex")
    parser.add_argument("--dst-ip", required=True, help="the guest's address: replies come from it")
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args(argv)

    sock = open_packet_socket(args.iface)
    sock.settimeout(0.2)  # the receiver wakes at least every 0.2 s to see a stop request
    guest_ip = socket.inet_aton(args.dst_ip)
    template = bytearray.fromhex(args.template)
    stop = StopRequest().on_signals()
    done_receiving = threading.Event()  # set by the main thread once the last replies had time to come
    lock = threading.Lock()
    out = sys.stdout

    def emit(line: str) -> None:
        with lock:
            out.write(line)

    def receiver() -> None:
        while not done_receiving.is_set():
            for frame, _, pkttype, ts in receive(sock):
                if done_receiving.is_set():  # first: under steady traffic, receive() may never run dry
                    break
                if pkttype == PACKET_OUTGOING:
                    continue
                seq = parse_probe(frame, src_ip=guest_ip)
                if seq is not None:
                    emit(f'{{"r": {seq}, "t": {ts:.6f}}}\n')

    rx = threading.Thread(target=receiver, name="probe-rx", daemon=True)
    rx.start()

    interval = 1.0 / args.rate
    start = time.monotonic()
    seq = late = failed = 0
    while not stop.requested:
        frame = stamp(template, seq)
        sent = time.time()
        try:
            sock.send(frame)
        except OSError:
            # ENOBUFS, ENETDOWN: the path is broken right here. The probe was due and
            # is recorded as sent: its missing reply is part of the outage.
            failed += 1
        emit(f'{{"s": {seq}, "t": {sent:.6f}}}\n')
        seq += 1
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # at most one interval: a stop request is seen within it
        elif delay < -interval:
            late += 1
    elapsed = time.monotonic() - start
    time.sleep(0.2)  # replies to the last probes
    done_receiving.set()
    rx.join(1.0)
    cpu = os.times()
    emit(json.dumps({"stats": {"sent": seq, "elapsed_s": elapsed, "late": late, "send_errors": failed,
                               "cpu_s": cpu.user + cpu.system}}) + "\n")
    out.flush()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
