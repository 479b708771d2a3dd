"""Probe sender/receiver, run as a subprocess inside the peer namespace.

scapy has no namespace support and ``setns`` is per thread, so the probe runs
in its own process started with ``ip netns exec``. It sends sequence-numbered
ICMP echo requests to the guest at a fixed rate from one packet socket, and
records each reply with the kernel's receive timestamp. Output is JSON lines
on stdout: ``{"s": seq, "t": sent}`` and ``{"r": seq, "t": received}``. It
stops on SIGTERM or SIGINT, after flushing.

    python -m harness.traffic.probe_main --iface peer0 --src-mac .. --src-ip .. --dst-ip .. --dst-mac .. --rate 100
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import struct
import sys
import threading
import time

MAGIC = b"FOHX"
ICMP_ID = 0xF0A1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe_main")
    parser.add_argument("--iface", required=True)
    parser.add_argument("--src-mac", required=True)
    parser.add_argument("--src-ip", required=True)
    parser.add_argument("--dst-ip", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args(argv)

    from scapy.arch.linux import L2Socket
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    sock = L2Socket(iface=args.iface)
    stop = threading.Event()
    out_lock = threading.Lock()

    def emit(record: dict[str, float | int]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(record) + "\n")

    def receive() -> None:
        while not stop.is_set():
            # Wake at least every 0.2 s so that a stop request is seen.
            if not select.select([sock.ins], [], [], 0.2)[0]:
                continue
            pkt = sock.recv()
            if pkt is None or ICMP not in pkt or IP not in pkt:
                continue
            icmp = pkt[ICMP]
            if icmp.type != 0 or icmp.id != ICMP_ID or pkt[IP].src != args.dst_ip:
                continue
            payload = bytes(icmp.payload)
            if payload[:4] != MAGIC:
                continue
            (seq,) = struct.unpack_from("!Q", payload, 4)
            emit({"r": seq, "t": float(pkt.time)})

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    template = Ether(dst=args.dst_mac, src=args.src_mac) / IP(src=args.src_ip, dst=args.dst_ip) / ICMP(id=ICMP_ID)
    interval = 1.0 / args.rate
    start = time.monotonic()
    seq = 0
    while not stop.is_set():
        frame = template.copy()
        frame[ICMP].seq = seq & 0xFFFF
        frame[ICMP].remove_payload()
        frame[ICMP].add_payload(Raw(MAGIC + struct.pack("!Q", seq)))
        raw = bytes(frame)
        sent = time.time()
        sock.send(raw)
        emit({"s": seq, "t": sent})
        seq += 1
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            stop.wait(delay)
    # Let replies to the last probes arrive.
    time.sleep(0.3)
    receiver.join(1.0)
    sys.stdout.flush()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
