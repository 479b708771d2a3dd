"""Figures for the measurement itself: probe cost, calibration error, one migration's full metric set.

    .venv/bin/python bench/measurement.py [--outages 10] [--rate 1000]

1. Probe cost: 10 s of probes at --rate against a booted guest: achieved send
   rate, late sends, reply rate, CPU time of the probe process.
2. Calibration: --outages drop-all windows of 200 ms injected into the peer's
   egress (a drop-all qdisc, over netlink); error of the probe-derived outage, mean and worst.
3. One migration under probes on the flat topology: every metric.
Runs on the library directly (no pytest); prints, never asserts.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.accel import choose_accel
from harness.config import RunConfig, build_config
from harness.image import ImageBuilder
from harness.metrics import probe_stats
from harness.scenarios import measure_migration, start_probe
from harness.timeline import Timeline
from harness.topologies.flat import FlatBed
from harness.traffic.outage import inject

STEADY_S = 10.0
OUTAGE_S = 0.2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outages", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--accel", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = build_config(None, {"probe_rate_hz": args.rate, "accel": args.accel})
    image = ImageBuilder(config.cache_dir).get()
    accel = choose_accel(config.accel, config.qemu_binary, image.kernel)
    print(f"accel: {accel.accel} ({accel.reason})")
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        bed = FlatBed(config, image, accel.accel, "bench", Path(f"/tmp/fohx-bench-{int(time.time())}"), Path(tmp))
        try:
            bed.build()
            bed.guest.wait_primary_active(30)
            probe_cost(bed, config, Path(tmp))
            calibration(bed, config, Path(tmp), args.outages)
            migration(bed, config, Path(tmp))
        finally:
            bed.teardown()
    return 0


def probe_cost(bed: FlatBed, config: RunConfig, tmp: Path) -> None:
    prober = start_probe(bed, config, tmp / "steady.jsonl")
    prober.wait_reply(10)
    time.sleep(STEADY_S)
    log = prober.result()
    stats = log.stats
    replies = {r.seq for r in log.replies}
    print(f"\n1. probes at {config.probe_rate_hz:g}/s for {stats['elapsed_s']:.1f} s")
    print(f"   achieved send rate   {stats['sent'] / stats['elapsed_s']:.1f}/s ({stats['late']} sends later than "
          "one interval)")
    print(f"   answered             {len(replies)} of {stats['sent']} ({100 * len(replies) / stats['sent']:.2f} %)")
    print(f"   probe process CPU    {stats['cpu_s']:.2f} s = {100 * stats['cpu_s'] / stats['elapsed_s']:.1f} % "
          "of one core (send + receive + JSON log)")


def calibration(bed: FlatBed, config: RunConfig, tmp: Path, count: int) -> None:
    prober = start_probe(bed, config, tmp / "calibration.jsonl")
    prober.wait_reply(10)
    injected = inject(bed.peer_exec_prefix(), bed.peer_interface(), OUTAGE_S, count=count, spacing_s=0.5)
    time.sleep(0.3)
    log = prober.result()
    timeline = Timeline("src", "-", log.sent[0].t, log.sent[-1].t, sent=log.sent, replies=log.replies)
    measured = probe_stats(timeline).outages
    errors = []
    for inj in injected:
        match = [o for o in measured if o.start < inj.end and o.end > inj.start]
        errors.append(match[0].ms - inj.ms if len(match) == 1 else float("nan"))
    finite = [abs(e) for e in errors if e == e]
    print(f"\n2. calibration: {count} injected outages of {OUTAGE_S * 1000:.0f} ms at {config.probe_rate_hz:g}/s")
    print("   errors ms            " + " ".join(f"{e:+.2f}" for e in errors))
    print(f"   mean |error|         {statistics.fmean(finite):.2f} ms, worst {max(finite):.2f} ms, "
          f"unmatched {len(errors) - len(finite)}; injection edges known to "
          f"±{max(i.bracket_s for i in injected) * 1e3:.3f} ms")


def migration(bed: FlatBed, config: RunConfig, tmp: Path) -> None:
    run = measure_migration(bed, config, tmp)
    print(f"\n3. one migration under probes ({run.result.status}), every metric:")
    for name, value in run.metrics.scalars().items():
        print(f"   {name:30} {value:.1f}" if isinstance(value, float) else f"   {name:30} {value}")


if __name__ == "__main__":
    sys.exit(main())
