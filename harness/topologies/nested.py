"""The nested topology: the failover guest (L2) runs inside an L1 hypervisor VM and
its primary is an emulated igb's SR-IOV VF passed through with VFIO.

::

    peer ns: peer0 ──veth── bridge ns: br0 ─┬─ l1src-pf ── L1 source: igb PF ─┬─ VF (vfio-pci) ── L2 primary
                                            │                         br0: PF ─┴─ l2sby ── L2 standby
                                            └─ l1dst-pf ── L1 destination (the same)
                            bridge ns: mgmt0 (198.19.255.254) ─┬─ l1src-mg (198.19.255.1)
                                                               └─ l1dst-mg (198.19.255.2)

The L2 QEMU is the host's own, run inside L1 (see :mod:`harness.hypervisor`);
its QMP and agent reach the harness over the management bridge through
relays (:mod:`harness.relay`), so the harness drives it like any other VM.
This module builds one L1 with its L2 so far; the bed that migrates between
two L1s is not written yet.
"""

from __future__ import annotations

import logging
from pathlib import Path

from harness.errors import GuestError
from harness.hypervisor import L1Host, L1Process, L2Paths, VirtualFunction
from harness.image import GuestImage, uncompressed_kernel
from harness.netns import Addressing, TestNetwork
from harness.relay import Relay
from harness.topologies.flat import PRIMARY_ID, STANDBY_ID, failover_devices, kernel_append
from harness.vm import VM, Device, TapNetdev, VMPaths, VMSpec

log = logging.getLogger(__name__)

MGMT_PREFIX = "198.19.255"
L0_MGMT_IP = f"{MGMT_PREFIX}.254"
MGMT_PREFIX_LEN = 24
QMP_RELAY_PORT = 4400
L2_CONTROL_PORT = 4500
L1_BRIDGE = "br0"
L2_STANDBY_TAP = "l2sby"
# Kernel arguments that cut the L2 guest's boot under nested TCG without changing
# what failover does: no crypto self-tests, no read-only remapping and its W+X
# scan, no speculation mitigations, no TSC and timer sanity checks.
L2_FAST_BOOT_ARGS = "cryptomgr.notests rodata=off mitigations=off tsc=reliable no_timer_check"
# SeaBIOS probes and waits; qboot only loads the kernel.
QBOOT = "/usr/share/qemu/qboot.rom"
# The drivers the L2 guest needs: failover and the VF (the image carries more).
L2_MODULES = "virtio_pci,failover,net_failover,virtio_net,igbvf"
L2_BOOT_TIMEOUT_S = 900.0


def l2_spec(name: str, qemu_binary: str, image: GuestImage, addressing: Addressing, vf: VirtualFunction,
            memory_mib: int = 512) -> VMSpec:
    """The failover guest's QEMU spec inside an L1: virtio-net standby, the VF as primary. Pure but
    for the uncompressed kernel it names (extracted once)."""
    devices = tuple(
        Device.of("vfio-pci", PRIMARY_ID, host=vf.address, bus=d.qmp_arguments()["bus"],
                  failover_pair_id=STANDBY_ID) if d.id == PRIMARY_ID else d
        for d in failover_devices(addressing.failover_mac))
    return VMSpec(
        name=name, qemu_binary=qemu_binary, accel="tcg", kernel=uncompressed_kernel(image), initrd=image.initrd,
        append=f"{kernel_append(addressing)} {L2_FAST_BOOT_ARGS} harness.modules={L2_MODULES}",
        memory_mib=memory_mib, netdevs=(TapNetdev("hn0", L2_STANDBY_TAP),), devices=devices,
        extra_args=("-bios", QBOOT),
    )


def connect_standby_to_pf(host: L1Host) -> None:
    """In L1: a bridge joins the PF and the L2 standby's tap, so both paths reach the peer through the igb."""
    assert host.pf_ifname is not None, "preflight() first"
    ip = ["/usr/bin/ip"]
    for argv in ([*ip, "link", "add", L1_BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0"],
                 [*ip, "tuntap", "add", "dev", L2_STANDBY_TAP, "mode", "tap"],
                 [*ip, "link", "set", host.pf_ifname, "master", L1_BRIDGE, "up"],
                 [*ip, "link", "set", L2_STANDBY_TAP, "master", L1_BRIDGE, "up"],
                 [*ip, "link", "set", L1_BRIDGE, "up"]):
        result = host.host_run(argv)
        if result.rc != 0:
            raise GuestError(f"{host.name}: {' '.join(argv)} exited {result.rc}: {result.output.strip()}")


def address_mgmt_bridge(network: TestNetwork) -> None:
    """Give the bridge namespace its address on the management bridge (the relays listen there)."""
    network.bridge_ns.run(["ip", "addr", "add", f"{L0_MGMT_IP}/{MGMT_PREFIX_LEN}", "dev", network.MGMT_BRIDGE])


def launch_l2(host: L1Host, spec: VMSpec, network: TestNetwork, run_dir: Path, artifacts_dir: Path,
              l1_mgmt_ip: str, qmp_port: int = QMP_RELAY_PORT) -> tuple[VM, list[Relay]]:
    """Start *spec*'s QEMU in *host* with its QMP and agent relayed to unix sockets in *run_dir*
    (each L2 of a bed needs its own *qmp_port*: the relays all listen in the bridge namespace)."""
    base = VMPaths.for_vm(spec.name, run_dir, artifacts_dir)
    paths = L2Paths(**vars(base), qmp_relay=f"{L0_MGMT_IP}:{qmp_port}",
                    control_listen=f"{l1_mgmt_ip}:{L2_CONTROL_PORT}", l1_console=f"/tmp/{spec.name}-console.log")
    prefix = network.bridge_ns.exec_prefix()
    relays = [Relay(prefix, "tcp-to-unix", paths.qmp_relay, str(paths.qmp_socket),
                    artifacts_dir / f"{spec.name}-relay.log")]
    try:
        relays.append(Relay(prefix, "unix-to-tcp", str(paths.control_socket), paths.control_listen,
                            artifacts_dir / f"{spec.name}-relay.log"))
        vm = VM(spec, paths, spawn=lambda argv, output: L1Process(host, spec.name, argv, output))
        vm.launch(connect_timeout=120.0)
    except BaseException:
        for relay in relays:
            relay.stop()
        raise
    return vm, relays
