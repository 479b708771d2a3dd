"""Injecting data-path outages of known length, to calibrate the probe measurement.

The outage is a root ``pfifo`` qdisc with a limit of 0 packets, so every
packet leaving the interface is dropped at enqueue (netem would do, but
is not in every kernel: this host's lacks it). It is added and removed over
netlink (pyroute2) by a helper process inside the namespace: each change is
one netlink request bracketed by the host clock, so each edge of the injected
window is known to well under a millisecond (reported as ``bracket_s``),
unlike a ``tc`` command whose process start alone takes milliseconds.

    python -m harness.traffic.outage --iface peer0 --duration 0.2 --count 10 --spacing 0.5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class InjectedOutage:
    """Drop-all active from :attr:`start` to :attr:`end` (host epoch), each known to ± :attr:`bracket_s`."""

    start: float
    end: float
    bracket_s: float

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0


def inject(exec_prefix: list[str], iface: str, duration_s: float, count: int, spacing_s: float,
           timeout: float = 120.0) -> list[InjectedOutage]:
    """Run the injector inside a namespace (*exec_prefix*) and return what it did."""
    argv = [*exec_prefix, sys.executable, "-m", "harness.traffic.outage", "--iface", iface,
            "--duration", str(duration_s), "--count", str(count), "--spacing", str(spacing_s)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout
    return [InjectedOutage(**json.loads(line)) for line in out.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outage")
    parser.add_argument("--iface", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--spacing", type=float, default=0.5)
    args = parser.parse_args(argv)
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=args.iface)[0]
        ipr.get_qdiscs(index=index)  # warm-up: pyroute2's first request sets up its event loop
        for _ in range(args.count):
            time.sleep(args.spacing)
            before = time.time()
            ipr.tc("add", "pfifo", index=index, limit=0)
            added = time.time()
            time.sleep(max(0.0, before + args.duration - time.time()))
            removing = time.time()
            ipr.tc("del", "pfifo", index=index)
            removed = time.time()
            print(json.dumps({"start": (before + added) / 2, "end": (removing + removed) / 2,
                              "bracket_s": max(added - before, removed - removing) / 2}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
