"""Guest behaviour without a migration: the primary unplugged and re-plugged by hand, guest reboot, driver reload.

The guest's net_failover must move traffic to the standby when the primary
goes and back when it returns, and a guest that re-probes virtio_net (reboot,
``rmmod``/``modprobe``, or unbind/bind where it is built in) must negotiate
failover again and get its primary back.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from harness.checks import CheckList
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.logscan import GUEST_RESET
from harness.metrics import PRIMARY, STANDBY
from harness.scenarios import observe_traffic
from harness.topologies import STANDBY_ID, FailoverBed
from harness.verdicts import check_failover_ready

# How long traffic must run on the standby alone before the primary returns.
STANDBY_DWELL_S = 3.0


@pytest.mark.timing
def test_primary_unplug_and_replug_without_migration(
    failover_bed: FailoverBed, harness_config: RunConfig, test_artifacts: Path, record_property: Any
) -> None:
    """device_del of the primary, then device_add: the guest moves to the standby and back, TCP survives."""
    bed, checks, limits = failover_bed, CheckList(record_property), harness_config.thresholds
    check_failover_ready(bed, harness_config, checks)
    marks: dict[str, float] = {}
    problems: list[str] = []

    def unplug_and_replug() -> None:
        try:  # a guest that never ejects is a finding (primary_deleted), not a harness error
            bed.unplug_primary(timeout=limits.wait_unplug_deadline_s)
        except HarnessError as e:
            problems.append(f"device_del: {e}")
        marks["deleted"] = time.time()
        time.sleep(STANDBY_DWELL_S)
        marks["readd"] = time.time()
        try:
            bed.plug_primary()
        except HarnessError as e:
            problems.append(f"device_add: {e}")
        bed.guest.wait_primary_active(limits.primary_restore_deadline_s)

    seen = observe_traffic(bed, harness_config, test_artifacts, unplug_and_replug,
                           iperf_s=harness_config.iperf_duration_s)
    deleted = [e for e in seen.timeline.events if e.name == "DEVICE_DELETED"]
    checks.check("primary_deleted", bool(deleted),
                 f"DEVICE_DELETED {[e.data.get('device') for e in deleted]}" if deleted else "; ".join(problems))
    # By when each reply left the guest (the path capture), not when it reached the peer: under
    # load, replies that left on the primary just before the eject arrived up to 44 ms after it.
    left = {}
    for path in sorted(seen.timeline.paths, key=lambda p: p.t):
        left.setdefault(path.seq, path)
    dwell = [p for p in left.values() if marks["deleted"] <= p.t <= marks["readd"]]
    on_standby = sum(1 for p in dwell if p.path == STANDBY)
    checks.check("standby_carried_traffic", bool(dwell) and on_standby == len(dwell),
                 f"{len(dwell)} probe replies left the guest while the primary was gone, {on_standby} of them on "
                 "the standby")
    view = bed.guest.failover()
    checks.check("primary_reenslaved", view.primary_active,
                 view.describe() + "".join(f"; {p}" for p in problems if p.startswith("device_add")))
    checks.check("traffic_back_on_primary", seen.final_path == PRIMARY,
                 f"the last replies travelled on: {seen.final_path or 'no attributed reply'}")
    iperf = seen.iperf
    checks.check("tcp_session_survived", iperf is not None and iperf.survived,
                 "the iperf3 TCP stream ran to its end" if iperf is not None and iperf.survived
                 else f"the iperf3 stream broke: {iperf.error if iperf else 'no result'}")
    record_property("metric.probes_lost", seen.stats.lost)
    record_property("metric.max_gap_ms", None if seen.stats.max_gap_ms is None else round(seen.stats.max_gap_ms, 1))
    checks.at_most("probes_lost", seen.stats.lost, limits.max_probes_lost)
    checks.at_most("max_gap_ms", seen.stats.max_gap_ms, limits.max_gap_ms, " ms")
    checks.verify()


def _reboot(bed: FailoverBed) -> None:
    mark = bed.source.qmp.mark()
    # Backgrounded, so the agent answers before the guest goes down.
    bed.guest.channel.run("(sleep 0.2; reboot -f) >/dev/null 2>&1 &")
    bed.source.qmp.next_event("RESET", 10.0, after=mark)
    bed.guest.channel.close()
    bed.guest.channel.wait_ready(120.0)


# A modular virtio_net is removed and loaded again; a built-in one (a small kernel) has each of
# its devices unbound and bound again: either way the driver's remove and probe run again.
RELOAD_VIRTIO_NET = (
    "if [ -e /sys/module/virtio_net/initstate ]; then rmmod virtio_net && modprobe virtio_net; "
    "else d=/sys/bus/virtio/drivers/virtio_net; for v in $(cd $d && ls -d virtio*); do "
    "echo $v > $d/unbind && echo $v > $d/bind || exit 1; done; fi")


def _reload_driver(bed: FailoverBed) -> None:
    a = bed.addressing
    result = bed.guest.channel.run(f"{RELOAD_VIRTIO_NET} && fo-up {a.failover_mac} {a.guest_ip}/{a.prefix_len}")
    if result.rc != 0:
        raise HarnessError(f"driver reload failed ({result.rc}): {result.output}")


RENEGOTIATIONS = {"reboot": _reboot, "driver-reload": _reload_driver}


@pytest.mark.parametrize("how", [pytest.param("reboot", marks=pytest.mark.allow_log(re.escape(GUEST_RESET))),
                                 "driver-reload"])
def test_failover_renegotiated(
    failover_bed: FailoverBed, how: str, harness_config: RunConfig, test_artifacts: Path, record_property: Any
) -> None:
    """After a guest reboot or a virtio_net reload, failover is negotiated again and the primary comes back."""
    bed, checks = failover_bed, CheckList(record_property)
    check_failover_ready(bed, harness_config, checks)
    qmp = bed.source.qmp
    mark = qmp.mark()
    errors: list[str] = []

    def renegotiate() -> None:
        try:
            RENEGOTIATIONS[how](bed)
            bed.guest.wait_primary_active(harness_config.thresholds.primary_restore_deadline_s)
        except HarnessError as e:
            errors.append(f"{type(e).__name__}: {e}")

    seen = observe_traffic(bed, harness_config, test_artifacts, renegotiate)
    again = [e for e in qmp.events[mark:] if e.name == "FAILOVER_NEGOTIATED"]
    checks.check("failover_negotiated_again", any(e.data.get("device-id") == STANDBY_ID for e in again),
                 f"FAILOVER_NEGOTIATED after the {how}: {[e.data for e in again] or 'none'}"
                 + "".join(f"; {error}" for error in errors))
    view = bed.guest.failover() if not errors else None
    checks.check("primary_enslaved_again", view is not None and view.primary_active,
                 view.describe() if view is not None else "guest not reachable")
    checks.check("traffic_back_on_primary", seen.final_path == PRIMARY,
                 f"the last replies travelled on: {seen.final_path or 'no attributed reply'}")
    checks.verify()
