"""The small guest kernel (harness/kernel.py), built from Debian's source or taken from the
cache, boots the flat guest image through PVH and qboot with no module at all: failover
is negotiated, the e1000e primary (the small kernel's flat primary, built in) is enslaved
and the peer answers the guest. The boot
figures go to the test's properties (``boot_s``, ``init_start_uptime_s``, ``ready_uptime_s``)."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.accel import AccelChoice
from harness.config import RunConfig
from harness.errors import CapabilityMissing
from harness.image import GuestImage
from harness.kernel import KernelBuilder
from harness.sweep import run_dir
from harness.topologies.flat import FlatBed
from harness.topologies.vfio import QBOOT

# A cold kernel build took 12 minutes on two busy cores; the default 900 s covers fixtures too.
# Whole host: the cold build uses every core.
pytestmark = [pytest.mark.timeout(3600), pytest.mark.whole_host]


@pytest.fixture(scope="module")
def small_kernel(harness_config: RunConfig) -> Path:
    try:
        return KernelBuilder(harness_config.cache_dir).get()  # minutes when cold, then cached
    except CapabilityMissing as e:
        if harness_config.require_resources:  # CI: a machine that cannot build it is a failure
            pytest.fail(f"required resource missing: {e}", pytrace=False)
        pytest.skip(str(e))


def guest_uptime(console: str, event: str) -> float:
    """The guest's uptime at init's ``harness: <event> <uptime> <idle>`` line on its console."""
    m = re.search(rf"harness: {event} (\d+\.\d+)", console)
    assert m, f"no 'harness: {event}' line on the console"
    return float(m.group(1))


def test_small_kernel_boots_the_guest_to_an_active_primary(harness_config: RunConfig, accel: AccelChoice,
                                                           guest_image: GuestImage, small_kernel: Path,
                                                           tmp_path: Path, record_property: Any) -> None:
    tag = f"sk{os.getpid() % 10000}"
    config = harness_config.model_copy(update={"flat_primary": "e1000e"})
    bed = FlatBed(config, replace(guest_image, kernel=small_kernel), accel.accel, tag,
                  run_dir(os.getpid(), tag), tmp_path / "artifacts",
                  extra_append="harness.modules=none", extra_qemu_args=("-bios", QBOOT))
    bed.build()
    try:
        record_property("accel", accel.accel)
        record_property("boot_s", round(bed.boot_s or 0.0, 1))
        view = bed.guest.wait_primary_active(60)
        assert view.primary_active and view.primary is not None, view.describe()
        assert view.primary.driver == "e1000e" and view.standby is not None, view.describe()
        assert view.standby.driver == "virtio_net", view.describe()
        assert any(e.name == "FAILOVER_NEGOTIATED" for e in bed.source.qmp.events)
        # The kernel is the small one, and nothing was left for modprobe to do.
        version = bed.guest.channel.run("cat /proc/version").output
        console = bed.source.paths.console_log.read_text(errors="replace")
        assert "modprobe" not in console, console
        record_property("kernel", version.strip())
        record_property("init_start_uptime_s", guest_uptime(console, "init start"))
        record_property("ready_uptime_s", guest_uptime(console, "ready"))
        # The peer answers through the primary, as with Debian's kernel.
        stats = f"/sys/class/net/{view.primary.name}/statistics/rx_packets"
        rx_before = int(bed.guest.channel.run(f"cat {stats}").output)
        ping = bed.guest.channel.run(f"ping -c 3 -W 10 {bed.addressing.peer_ip}", timeout=60)
        assert ping.rc == 0, ping.output
        assert int(bed.guest.channel.run(f"cat {stats}").output) - rx_before >= 3
    finally:
        bed.teardown()
