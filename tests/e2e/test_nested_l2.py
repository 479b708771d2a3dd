"""The nested topology's failover guest, booted for real inside an L1: its primary is
an emulated igb VF passed through with VFIO, net_failover enslaves it, and the
peer reaches the guest through it. Slow under nested TCG (minutes): the figures
go to the test's properties (``l1_boot_s``, ``l2_boot_s``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import netns
from harness.accel import AccelChoice
from harness.config import RunConfig
from harness.guest import ControlChannel, Guest
from harness.hypervisor import boot_l1, l1_spec
from harness.image import L1_RECIPE_DIR, GuestImage, ImageBuilder
from harness.topologies.nested import (
    L2_BOOT_TIMEOUT_S,
    MGMT_PREFIX,
    MGMT_PREFIX_LEN,
    address_mgmt_bridge,
    connect_standby_to_pf,
    l2_spec,
    launch_l2,
)


@pytest.fixture
def network() -> Iterator[netns.TestNetwork]:
    net = netns.TestNetwork(f"l2t-{os.getpid() % 10000}").create()
    yield net
    net.delete()


def test_l2_enslaves_a_vf_passed_through_from_l1(harness_config: RunConfig, accel: AccelChoice,
                                                 guest_image: GuestImage, network: netns.TestNetwork,
                                                 tmp_path: Path, record_property: Any) -> None:
    a = network.addressing
    run_dir, artifacts = tmp_path / "run", tmp_path / "artifacts"
    l1_ip = f"{MGMT_PREFIX}.1"
    l1_image = ImageBuilder(harness_config.cache_dir, L1_RECIPE_DIR).get()
    started = time.monotonic()
    host = boot_l1(l1_spec("l1src", harness_config.qemu_binary, accel.accel, l1_image, pf_mac="52:54:00:aa:00:01",
                           mgmt_mac="52:54:00:ab:00:01", mgmt_addr=f"{l1_ip}/{MGMT_PREFIX_LEN}"),
                   network, run_dir, artifacts)
    record_property("l1_boot_s", round(time.monotonic() - started, 1))
    try:
        address_mgmt_bridge(network)
        host.preflight()
        (vf,) = host.create_vfs(1)
        vf = host.set_vf_mac(vf, a.failover_mac)
        host.bind_vfio(vf)
        connect_standby_to_pf(host)
        started = time.monotonic()
        vm, relays = launch_l2(host, l2_spec("l2src", harness_config.qemu_binary, guest_image, a, vf),
                               network, run_dir, artifacts, l1_ip)
        try:
            guest = Guest(ControlChannel(vm.paths.control_socket, artifacts / "l2-control.log",
                                         qemu_running=vm.is_running), a.failover_mac)
            guest.channel.wait_ready(L2_BOOT_TIMEOUT_S)
            view = guest.wait_primary_active(120)
            record_property("l2_boot_s", round(time.monotonic() - started, 1))
            assert view.primary_active and view.primary is not None, view.describe()
            assert view.primary.driver == "igbvf", view.describe()
            assert vm.qmp is not None and any(e.name == "FAILOVER_NEGOTIATED" for e in vm.qmp.events)
            # The guest reaches the peer through the VF and L0's igb model, as through a real NIC.
            stats = f"/sys/class/net/{view.primary.name}/statistics/rx_packets"
            rx_before = int(guest.channel.run(f"cat {stats}").output)
            ping = guest.channel.run(f"ping -c 3 -W 10 {a.peer_ip}", timeout=120)
            assert ping.rc == 0, ping.output
            assert int(guest.channel.run(f"cat {stats}").output) - rx_before >= 3  # the replies came in on the VF
        finally:
            vm.shutdown()
            for relay in relays:
                relay.stop()
    finally:
        host.shutdown()
    assert not host.vm.is_running()
