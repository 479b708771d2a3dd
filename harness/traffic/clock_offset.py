"""How far a machine's clock is from ours, by ICMP timestamp requests (RFC 792).

The nested topology's L2 QEMU runs in an L1 VM, so its QMP events carry L1's
clock, while probes, captures and the harness run on L0's. The kernel answers
an ICMP timestamp request with its own time of day in milliseconds, with no
userspace in the way; over the management link the round trip takes about a
millisecond, so the sample with the shortest round trip gives the offset to
within half of it.

Run inside the namespace that reaches the target; prints one JSON line::

    python -m harness.traffic.clock_offset 198.19.255.1
    {"offset_s": -0.412, "uncertainty_s": 0.0006, "samples": 10}
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass

from harness.traffic.icmp import internet_checksum

ICMP_TIMESTAMP_REQUEST = 13
ICMP_TIMESTAMP_REPLY = 14
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Sample:
    """One exchange: our send and receive times (epoch s) and the target's receive time of day (ms)."""

    sent: float
    received: float
    their_ms: int

    @property
    def rtt(self) -> float:
        return self.received - self.sent

    def offset(self) -> float:
        """Their clock minus ours (s): their time of day against the middle of the round trip."""
        ours_ms = ((self.sent + self.received) / 2 * 1000) % DAY_MS
        diff = (self.their_ms - ours_ms) % DAY_MS
        if diff >= DAY_MS / 2:  # the two times straddle midnight UT
            diff -= DAY_MS
        return diff / 1000


def timestamp_request(ident: int, seq: int, now: float) -> bytes:
    """An ICMP timestamp request (its originate time: *now*'s milliseconds since midnight UT)."""
    originate = int(now * 1000) % DAY_MS
    header = struct.pack("!BBHHHIII", ICMP_TIMESTAMP_REQUEST, 0, 0, ident, seq, originate, 0, 0)
    return header[:2] + struct.pack("!H", internet_checksum(header)) + header[4:]


def parse_timestamp_reply(packet: bytes, ident: int) -> tuple[int, int] | None:
    """(sequence, receive timestamp in ms) of a reply to *ident* in an IPv4 packet; None otherwise."""
    icmp = packet[(packet[0] & 0x0F) * 4:]
    if len(icmp) < 20:
        return None
    kind, _, _, their_ident, seq, _, receive, _ = struct.unpack("!BBHHHIII", icmp[:20])
    if kind != ICMP_TIMESTAMP_REPLY or their_ident != ident:
        return None
    return seq, receive


def best_estimate(samples: list[Sample]) -> tuple[float, float]:
    """(offset, uncertainty) in seconds from the sample with the shortest round trip."""
    best = min(samples, key=lambda s: s.rtt)
    # Their timestamp has millisecond resolution: half a millisecond on top of half the round trip.
    return best.offset(), best.rtt / 2 + 0.0005


def measure(target: str, count: int, timeout: float = 1.0) -> list[Sample]:
    ident = os.getpid() & 0xFFFF
    samples = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout)
        for seq in range(count):
            sent = time.time()
            sock.sendto(timestamp_request(ident, seq, sent), (target, 0))
            deadline = sent + timeout
            while time.time() < deadline:
                try:
                    packet = sock.recv(1500)
                except TimeoutError:
                    break
                received = time.time()
                reply = parse_timestamp_reply(packet, ident)
                if reply is not None and reply[0] == seq:
                    samples.append(Sample(sent, received, reply[1]))
                    break
            time.sleep(0.02)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.traffic.clock_offset")
    parser.add_argument("target", help="IPv4 address of the machine whose clock to compare")
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args(argv)
    samples = measure(args.target, args.count)
    if not samples:
        print(f"no ICMP timestamp reply from {args.target}", file=sys.stderr)
        return 1
    offset, uncertainty = best_estimate(samples)
    print(json.dumps({"offset_s": round(offset, 6), "uncertainty_s": round(uncertainty, 6),
                      "samples": len(samples)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
