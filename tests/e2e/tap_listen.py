"""Test helper: attach to taps (so their carrier is up) and count the frames each delivers for one MAC.

Runs inside the switch namespace. It first sends one frame from that MAC out
of ``--send-from``, as a guest NIC would, which teaches a learning bridge
that port; then it listens and prints ``{"tap": count, ...}``.

    python tests/e2e/tap_listen.py --mac 52:54:00:fa:00:01 --seconds 2 --send-from src-pri src-sby src-pri dst-sby
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mac", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--send-from", required=True)
    parser.add_argument("taps", nargs="+")
    args = parser.parse_args()
    mac = bytes.fromhex(args.mac.replace(":", ""))
    fds = {open_tap(tap): tap for tap in args.taps}
    counts = dict.fromkeys(args.taps, 0)
    time.sleep(0.2)  # carrier up, ports forwarding
    sender = next(fd for fd, tap in fds.items() if tap == args.send_from)
    os.write(sender, b"\xff" * 6 + mac + b"\x88\xb5" + b"\x00" * 46)  # local experimental ethertype
    print("ready", flush=True)
    deadline = time.monotonic() + args.seconds
    while (left := deadline - time.monotonic()) > 0:
        for fd in select.select(list(fds), [], [], left)[0]:
            if os.read(fd, 65536)[:6] == mac:
                counts[fds[fd]] += 1
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
