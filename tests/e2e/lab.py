"""Two L1 hypervisors standing in for a lab's hosts, for the lab tools' tests and a whole suite's run.

Each L1 runs the host's own sshd (from its read-only share of the host's root)
on its management address, and its emulated igb's VFs are the "real" VFs; its
bridge ``br0`` holds the PF, as a lab host's bridge holds its uplink. The
harness reaches them over SSH from the lab network's bridge namespace, as a
harness in a lab reaches its hosts over the management network.

Run as a program, it stands the lab up and runs the conformance suite on it::

    python -m tests.e2e.lab --reports reports/lab [--pairs] [--soak MIGRATIONS] [-- PYTEST-ARGS]

(``failover-harness run --profile profiles/lab-tcg.toml -- --topology host
--inventory lab.toml``, the inventory written into the reports directory: the
profile's rates and limits are the host topology's on lab hosts that are TCG
guests with KVM inside, as these L1s are), then shuts the lab down. With
``--pairs`` the inventory has two failover pairs (:data:`LOCAL_PAIRS`), for a
run with ``-- -n 2``; with ``--soak`` it runs ``failover-harness soak`` there
instead (the host topology's metric distributions, which its limits come from).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import netns
from harness.accel import choose_accel
from harness.config import RunConfig, build_config
from harness.doctor import Finding
from harness.hypervisor import L1Host, l1_spec, start_l1
from harness.image import L1_RECIPE_DIR, ImageBuilder
from harness.kernel import KernelBuilder
from harness.lab.doctor import diagnose_inventory
from harness.lab.inventory import Inventory, parse_inventory
from harness.lab.ssh import netns_socket_factory
from harness.sriov.claims import VirtualFunction
from harness.topologies.emulated_nesting import L1_PANIC, panic_report
from harness.topologies.nested import (
    L1_BRIDGE,
    MGMT_PREFIX,
    MGMT_PREFIX_LEN,
    address_mgmt_bridge,
    connect_standbys_to_pf,
)
from harness.vm import Accel, Device, TapNetdev, VMSpec
from tests.e2e.test_ssh_hosts import PRIVSEP_DIR, SSHD, SSHD_CONFIG, keygen

NAMES = ("l1a", "l1b")
REPO = Path(__file__).parents[2]
LAB_PROFILE = REPO / "profiles" / "lab-tcg.toml"
SSH_PORT = 22
# The lab host that has a port for a traffic peer on it (tests of a peer on a lab host), and its MAC.
PEER_HOST = "l1a"
PEER_PORT_MAC = "52:54:00:ac:00:01"
# Two failover pairs on disjoint hosts, each a local migration from an L1's first VF to its second (a
# timing case has its pair's hosts to itself: on disjoint hosts two run at once): name → host.
LOCAL_PAIRS = {"a": "l1a", "b": "l1b"}


@dataclass
class Lab:
    """Two L1s with sshd, two VFs each bound to vfio-pci; the second VF of l1b held by a process."""

    network: netns.TestNetwork
    hosts: dict[str, L1Host]
    vfs: dict[str, list[VirtualFunction]]
    keys: Path
    holder_pid: int
    # Per L1: how much of its console was read for kernel panics.
    console_read: dict[str, int] = field(default_factory=dict)

    def new_panics(self, *, mark_seen: bool = True) -> dict[str, str]:
        """Per L1 whose kernel panicked since the last look (under TCG it has: a stack overflow in an
        interrupt, in the scheduler), the panic line. Such an L1 rebooted (``panic=-1``) and lost the
        lab's setup: :meth:`recover`. Without *mark_seen*, the next look finds them again."""
        found = {}
        for name, host in self.hosts.items():
            text = host.vm.paths.console_log.read_text(errors="replace")
            start = self.console_read.get(name, 0)
            if mark_seen:
                self.console_read[name] = len(text)
            if (at := text.find(L1_PANIC, start)) >= 0:
                found[name] = panic_report(text, at)
        return found

    def recover(self, names: Iterable[str]) -> None:
        """Set the L1s *names*, rebooted after a panic, up again as :func:`standing_lab` did."""
        for name in names:
            host = self.hosts[name]
            host.wait_ready()
            self.vfs[name] = set_up_host(host, self.keys, NAMES.index(name))
            if name == "l1b":
                self.holder_pid = hold_vf(host, self.vfs[name][1])

    @contextlib.contextmanager
    def every_vf_free(self) -> Iterator[None]:
        """While in the block, no process holds l1b's second VF (a second pair needs it); held again after
        (unless a panic's :meth:`recover` did that already)."""
        held = self.holder_pid
        # Until it is gone or a zombie (L1's init does not reap it): a zombie holds no file.
        self.hosts["l1b"].check(f"kill {held}; while [ -e /proc/{held} ] && "
                                f"! grep -q '^State:[[:space:]]*Z' /proc/{held}/status; do sleep 0.1; done",
                                "freeing l1b's second VF")
        try:
            yield
        finally:
            if self.holder_pid == held:
                self.holder_pid = hold_vf(self.hosts["l1b"], self.vfs["l1b"][1])

    def inventory(self, **host_changes: dict[str, Any]) -> Inventory:
        """An inventory of this lab (each host's first VF), with *host_changes* per host name."""
        hosts = {name: {"address": f"{MGMT_PREFIX}.{i + 1}", "port": SSH_PORT, "key": str(self.keys / "client_key"),
                        "known_hosts": str(self.keys / "known_hosts"), "pf": host.pf_ifname,
                        "vfs": [self.vfs[name][0].address], "mgmt_address": f"{MGMT_PREFIX}.{i + 1}"}
                 | host_changes.get(name, {})
                 for i, (name, host) in enumerate(self.hosts.items())}
        return parse_inventory({"failover_macs": ["52:54:00:fa:00:01"], "hosts": hosts,
                                "peer": {"host": "l1a", "interface": "mgmt0", "address": "198.18.0.1/24"}},
                               "lab.toml")

    def diagnose(self, inventory: Inventory) -> dict[str, list[Finding]]:
        return diagnose_inventory(inventory, lambda _: netns_socket_factory(self.network.bridge_ns.name))

    def state(self) -> dict[str, str]:
        """What the doctor and a bed must leave as it was: VF counts, drivers and MACs, per L1."""
        return {name: host.check(
            f"cat /sys/bus/pci/devices/{host.pf_address}/sriov_numvfs; "
            "for d in /sys/bus/pci/devices/*/physfn; do v=${d%/physfn}; echo ${v##*/} $(readlink $v/driver); done; "
            # Without the link's flags and state: the PF's carrier comes up on its own after boot.
            f"chroot /host /usr/bin/ip link show {host.pf_ifname} | sed 's/<[^>]*>//; s/ state [A-Z]*//'",
            "reading SR-IOV state")
            for name, host in self.hosts.items()}


def start_sshd(host: L1Host, keys: Path, ip: str) -> None:
    """The host's sshd inside L1 (chroot /host), its config and keys read from the host's /tmp share."""
    config = keys / f"sshd_config.{host.name}"
    config.write_text(SSHD_CONFIG.format(ip=ip, port=SSH_PORT, dir=keys)
                      .replace(f"PidFile {keys}/sshd.pid", "PidFile /run/fohx/sshd.pid"))
    host.check(f"mkdir -p /host{PRIVSEP_DIR} && chroot /host {SSHD} -f {config} -E /run/fohx/sshd.log",
               "starting sshd")


def set_up_host(host: L1Host, keys: Path, index: int) -> list[VirtualFunction]:
    """An L1 that has booted made a lab host: two VFs bound to vfio-pci, sshd, the bridge ``br0``."""
    host.preflight()
    vfs = host.create_vfs(2)
    for vf in vfs:
        host.take_vf(vf)
    start_sshd(host, keys, f"{MGMT_PREFIX}.{index + 1}")
    connect_standbys_to_pf(host, [])  # the lab's bridge, br0: the PF is its uplink
    return vfs


def hold_vf(host: L1Host, vf: VirtualFunction) -> int:
    """The pid of a process in *host* that holds *vf*'s VFIO group open, as a VM's QEMU would."""
    group = host.check(f"basename $(readlink /sys/bus/pci/devices/{vf.address}/iommu_group)",
                       "the VF's IOMMU group").strip()
    return int(host.check(f"sleep 3600 < /dev/vfio/{group} > /dev/null 2>&1 & echo $!", "holding the VF").split()[-1])


@contextlib.contextmanager
def standing_lab(config: RunConfig, accel: Accel, tmp: Path) -> Iterator[Lab]:
    """Two L1s as lab hosts (their files under *tmp*), shut down and their network deleted on exit."""
    keys = tmp / "keys"
    keys.mkdir(parents=True)
    host_pub = keygen(keys / "host_key")
    (keys / "authorized_keys").write_text(keygen(keys / "client_key") + "\n")
    (keys / "known_hosts").write_text("".join(f"{MGMT_PREFIX}.{i + 1} {host_pub}\n" for i in range(len(NAMES))))
    if config.guest_kernel is None:
        # The cases run in the lab's management namespace, where apt cannot reach its mirror: the
        # small guest kernel they boot is built (on a fresh machine) or found in the cache here.
        KernelBuilder(config.cache_dir).get()
    network = netns.TestNetwork(f"hd-{os.getpid() % 10000}").create()
    hosts: dict[str, L1Host] = {}
    try:
        image = ImageBuilder(config.cache_dir, L1_RECIPE_DIR).get()
        for i, name in enumerate(NAMES):
            spec = l1_spec(name, config.qemu_binary, accel, image, pf_mac=f"52:54:00:aa:00:{i + 1:02x}",
                           mgmt_mac=f"52:54:00:ab:00:{i + 1:02x}",
                           mgmt_addr=f"{MGMT_PREFIX}.{i + 1}/{MGMT_PREFIX_LEN}")
            if name == PEER_HOST:
                spec = with_peer_port(spec)
            hosts[name] = start_l1(spec, network, tmp / "run", tmp / "artifacts")
        address_mgmt_bridge(network)
        vfs = {}
        for i, (name, host) in enumerate(hosts.items()):
            host.wait_ready()
            vfs[name] = set_up_host(host, keys, i)
        lab = Lab(network, hosts, vfs, keys, hold_vf(hosts["l1b"], vfs["l1b"][1]))
        lab.new_panics()  # the consoles so far
        yield lab
    finally:
        for host in hosts.values():
            host.shutdown()
        network.delete()


@dataclass(frozen=True)
class LabPeer:
    """The traffic peer in a namespace on a lab host."""

    host: str
    namespace: str
    interface: str
    # Not the test network's peer address: its peer namespace here has that, on the same data network.
    address: str = "198.18.2.1/24"


def with_peer_port(spec: VMSpec) -> VMSpec:
    """*spec* with a NIC of its own on the VFs' network for a traffic peer (as a lab gives the peer a
    port apart from the VFs' PF: a NIC's internal switch would hand a frame for the failover MAC to the
    local VF that still has it, even after the guest left this host). Pure."""
    tap = TapNetdev("peerport", f"{spec.name}-pp")
    return replace(spec, netdevs=(*spec.netdevs, tap), devices=(
        *spec.devices, Device.of("virtio-net-pci", "peerport", netdev=tap.id, mac=PEER_PORT_MAC, bus="pcie.0")))


@contextlib.contextmanager
def peer_namespace(lab: Lab) -> Iterator[LabPeer]:
    """A namespace on :data:`PEER_HOST` holding its peer port (:func:`with_peer_port`), as a lab's admin
    would give the traffic peer. Removed on exit (the port goes back to the host's namespace)."""
    peer = LabPeer(PEER_HOST, "fohx-labpeer", "peer0")
    host = lab.hosts[PEER_HOST].userspace()
    links = json.loads(host.check(["ip", "-j", "link", "show"], "the host's interfaces"))
    (port,) = [link["ifname"] for link in links if link.get("address") == PEER_PORT_MAC]
    try:
        host.check(["ip", "netns", "add", peer.namespace], "making the peer's namespace")
        host.check(["ip", "link", "set", "dev", port, "netns", peer.namespace], "moving the peer port")
        for argv in (["ip", "link", "set", "dev", port, "name", peer.interface], ["ip", "link", "set", "lo", "up"],
                     ["ip", "link", "set", "dev", peer.interface, "up"]):
            host.check(["ip", "netns", "exec", peer.namespace, *argv], "setting up the peer port")
        yield peer
    finally:
        host.run(["ip", "netns", "del", peer.namespace])


def inventory_file(lab: Lab, path: Path, *, for_runs: bool = False, vfs: dict[str, list[str]] | None = None,
                   peer: LabPeer | None = None, qemu_binary: str | None = None, local_pairs: bool = False) -> Path:
    """The lab's inventory as a user writes it: the hosts *vfs* names with those VFs (default: both, each
    with its first VF), running *qemu_binary* if given; *for_runs*:
    with what the host topology needs too (the standby bridge, the peer on this machine unless *peer*
    places it on a lab host) and the limits of :data:`LAB_PROFILE`; *local_pairs*: both VFs of each host, in
    the failover pairs :data:`LOCAL_PAIRS` (l1b's second VF: :meth:`Lab.every_vf_free`)."""
    if local_pairs:
        vfs = {name: [vf.address for vf in lab.vfs[name]] for name in NAMES}
    vf_of = vfs or {name: [lab.vfs[name][0].address] for name in NAMES}
    macs = [f"52:54:00:fa:00:{i + 1:02x}" for i in range(len(LOCAL_PAIRS) if local_pairs else 1)]
    pairs = [line for pair, host in LOCAL_PAIRS.items() for line in (
        f"[pairs.{pair}]", f'source = {{ host = "{host}", vf = "{lab.vfs[host][0].address}" }}',
        f'destination = {{ host = "{host}", vf = "{lab.vfs[host][1].address}" }}')] if local_pairs else []
    if peer is not None:
        peer_lines = [f'host = "{peer.host}"', f'namespace = "{peer.namespace}"', f'interface = "{peer.interface}"']
    elif for_runs:
        peer_lines = ['host = "local"', f'namespace = "{lab.network.peer_ns.name}"',
                      f'interface = "{netns.TestNetwork.PEER_IF}"']
    else:
        peer_lines = ['host = "l1a"', 'interface = "mgmt0"']
    limits = tomllib.loads(LAB_PROFILE.read_text())["thresholds"] if for_runs else {}
    path.write_text("\n".join([
        f"failover_macs = {json.dumps(macs)}",
        *(line for i, name in enumerate(NAMES) if name in vf_of for line in (
            f"[hosts.{name}]", f'address = "{MGMT_PREFIX}.{i + 1}"', f'key = "{lab.keys / "client_key"}"',
            f'known_hosts = "{lab.keys / "known_hosts"}"', f'pf = "{lab.hosts[name].pf_ifname}"',
            f"vfs = {json.dumps(vf_of[name])}", f'mgmt_address = "{MGMT_PREFIX}.{i + 1}"',
            *([f'standby_bridge = "{L1_BRIDGE}"'] if for_runs else []),
            *([f'qemu_binary = "{qemu_binary}"'] if qemu_binary else []))),
        "[peer]", *peer_lines, f'address = "{peer.address if peer else "198.18.0.1/24"}"',
        *(["[thresholds]", *(f"{key} = {value}" for key, value in limits.items())] if for_runs else []),
        *pairs, ""]))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, default=REPO / "reports" / "lab")
    parser.add_argument("--pairs", action="store_true", help="two failover pairs (LOCAL_PAIRS), for -- -n 2")
    parser.add_argument("--soak", type=int, metavar="MIGRATIONS",
                        help="instead of the suite, the soak: one guest migrated MIGRATIONS times between the hosts")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    args = parser.parse_args()
    config = build_config(None, {})
    kernel = ImageBuilder(config.cache_dir, L1_RECIPE_DIR).get().kernel
    accel = choose_accel(config.accel, config.qemu_binary, kernel)
    print(f"L1 accelerator: {accel.accel} ({accel.reason})", flush=True)
    args.reports.mkdir(parents=True, exist_ok=True)
    with standing_lab(config, accel.accel, args.reports / "lab") as lab, \
            lab.every_vf_free() if args.pairs else contextlib.nullcontext():
        inventory = inventory_file(lab, args.reports / "lab.toml", for_runs=True, local_pairs=args.pairs)
        cli = Path(sys.executable).parent / "failover-harness"
        command = (["soak", "--migrations", str(args.soak), "--reports", str(args.reports), "--",
                    "--harness-config", str(LAB_PROFILE)] if args.soak else
                   ["run", "--reports", str(args.reports), "--profile", str(LAB_PROFILE), "--"])
        argv = [*lab.network.bridge_ns.exec_prefix(), str(cli), *command,
                "--topology", "host", "--inventory", str(inventory),
                *(arg for arg in args.pytest_args if arg != "--")]
        return subprocess.call(argv, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
