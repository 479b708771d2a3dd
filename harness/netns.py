"""Network namespaces, bridges, taps and veths for one test, all removed at teardown.

Every namespace the harness makes is named ``fohx-<pid>-<tag>``, where *pid* is
the pytest process that owns it. Interface names live inside those namespaces,
so they never collide between tests or workers; only namespace names must be
unique, and the owner pid lets :func:`sweep_stale` remove what a crashed run
left behind without touching a live run's namespaces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import CommandFailed
from harness.proc import run

log = logging.getLogger(__name__)

NETNS_PREFIX = "fohx-"
BRIDGE_AGEING_CS = 100
_NETNS_RE = re.compile(rf"^{NETNS_PREFIX}(\d+)-")


def netns_name(tag: str, owner_pid: int | None = None) -> str:
    """Namespace name for *tag*, owned by this process unless *owner_pid* is given."""
    return f"{NETNS_PREFIX}{owner_pid or os.getpid()}-{tag}"


def list_harness_netns() -> list[str]:
    """Names of every namespace that carries the harness prefix."""
    out = run(["ip", "netns", "list"])
    names = (line.split()[0] for line in out.splitlines() if line.strip())
    return [n for n in names if n.startswith(NETNS_PREFIX)]


def pid_alive(pid: int) -> bool:
    """Whether *pid* runs; a zombie does not (a killed xdist worker stays one until xdist reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X")  # the state field follows "(comm) "


@dataclass
class Netns:
    """One network namespace; :meth:`delete` kills what runs inside and removes it (idempotent)."""

    name: str
    _created: bool = field(default=False, init=False)

    def create(self) -> Netns:
        run(["ip", "netns", "add", self.name])
        self._created = True
        # No IPv6: its router solicitations and DAD would be noise in probe captures.
        self.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        self.run(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
        self.run(["ip", "link", "set", "lo", "up"])
        return self

    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, argv: list[str], **kwargs: object) -> str:
        return run(self.exec_prefix() + argv, **kwargs)  # type: ignore[arg-type]

    def pids(self) -> list[int]:
        out = run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in out.split() if p.isdigit()]

    def delete(self) -> None:
        if not self._created:
            return
        kill_and_delete(self.name)
        self._created = False


def kill_and_delete(name: str) -> None:
    """SIGKILL every process inside namespace *name*, then delete it."""
    for _ in range(50):
        out = run(["ip", "netns", "pids", name], check=False)
        pids = [int(p) for p in out.split() if p.isdigit()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    try:
        run(["ip", "netns", "delete", name])
    except CommandFailed as e:
        if "No such file" not in e.output:
            raise
    log.debug("deleted netns %s", name)


def sweep_stale() -> list[str]:
    """Remove namespaces of harness runs whose owning process is gone; return their names."""
    removed = []
    for name in list_harness_netns():
        m = _NETNS_RE.match(name)
        if m and not pid_alive(int(m.group(1))):
            log.info("sweeping stale namespace %s", name)
            kill_and_delete(name)
            removed.append(name)
    return removed


@dataclass(frozen=True)
class Addressing:
    """Addresses of one test network, inside 198.18.0.0/15 (RFC 2544 benchmarking range)."""

    peer_ip: str = "198.18.0.1"
    guest_ip: str = "198.18.0.2"
    prefix_len: int = 24
    failover_mac: str = "52:54:00:fa:00:01"
    # Fixed, not random: a guest restored from a snapshot still has the peer in its ARP cache.
    peer_mac: str = "52:54:00:fa:ff:01"

    def second_pair(self) -> Addressing:
        """Addresses and failover MAC of a second failover pair on the same bridge.

        Its own subnet: with both masters in one subnet, the guest would route
        the second pair's replies out of the first pair's interfaces.
        """
        return Addressing("198.18.1.1", "198.18.1.2", self.prefix_len, "52:54:00:fa:00:02", self.peer_mac)


@dataclass
class TestNetwork:
    """A bridge namespace holding the VMs' taps, and a peer namespace linked to the bridge by a veth.

    QEMU runs inside :attr:`bridge_ns` so that it opens its taps there; the
    traffic peer sends from ``peer0`` in :attr:`peer_ns`. The data bridge
    (:attr:`BRIDGE`) is the switch: a tap on it is a host's uplink (the nested
    topology's L1 NICs), and :meth:`add_host` gives a VM a host of its own.
    """

    tag: str
    addressing: Addressing = field(default_factory=Addressing)
    bridge_ns: Netns = field(init=False)
    peer_ns: Netns = field(init=False)
    taps: list[str] = field(default_factory=list, init=False)
    _extra_bridges: list[str] = field(default_factory=list, init=False)
    _host_taps: dict[str, list[str]] = field(default_factory=dict, init=False)  # a host's NIC → its taps

    BRIDGE = "br0"
    MGMT_BRIDGE = "mgmt0"
    PEER_IF = "peer0"
    UPLINK_IF = "uplink0"

    def __post_init__(self) -> None:
        self.bridge_ns = Netns(netns_name(f"{self.tag}-br"))
        self.peer_ns = Netns(netns_name(f"{self.tag}-peer"))

    def create(self) -> TestNetwork:
        try:
            self._create()
        except BaseException:
            self.delete()
            raise
        return self

    def _create(self) -> None:
        br, peer = self.bridge_ns.create(), self.peer_ns.create()
        # Forward delay 0: a port must forward at once, the guest's path switch depends on it.
        # Ageing 1 s (unit: 1/100 s): the switch learns which host the failover MAC is
        # behind from what the guest and QEMU send. A migrated guest is announced by
        # QEMU; one that stays silent longer than that is flooded to every host.
        br.run(["ip", "link", "add", self.BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0",
                "ageing_time", str(BRIDGE_AGEING_CS)])
        br.run(["ip", "link", "set", self.BRIDGE, "up"])
        br.run(["ip", "link", "add", self.UPLINK_IF, "type", "veth", "peer", "name", self.PEER_IF,
                "address", self.addressing.peer_mac, "netns", peer.name])
        br.run(["ip", "link", "set", self.UPLINK_IF, "master", self.BRIDGE, "up"])
        a = self.addressing
        for pair in (a, a.second_pair()):
            peer.run(["ip", "addr", "add", f"{pair.peer_ip}/{pair.prefix_len}", "dev", self.PEER_IF])
        peer.run(["ip", "link", "set", self.PEER_IF, "up"])

    def add_tap(self, name: str, bridge: str = BRIDGE) -> str:
        """Create tap *name* on *bridge* and return it (QEMU attaches with ``ifname=``).

        A bridge other than the data bridge (the nested topology's management
        link, :attr:`MGMT_BRIDGE`) is created on first use; it has no peer.
        On a host's NIC (:meth:`add_host`) the tap learns nothing.
        """
        if bridge != self.BRIDGE and bridge not in self._extra_bridges:
            self._add_bridge(bridge)
        self.bridge_ns.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])
        self.taps.append(name)
        self.bridge_ns.run(["ip", "link", "set", name, "master", bridge, "up"])
        if bridge in self._host_taps:
            self.bridge_ns.run(["ip", "link", "set", "dev", name, "type", "bridge_slave", "learning", "off"])
            self._host_taps[bridge].append(name)
        return name

    def _add_bridge(self, bridge: str) -> None:
        self.bridge_ns.run(["ip", "link", "add", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"])
        self.bridge_ns.run(["ip", "link", "set", bridge, "up"])
        self._extra_bridges.append(bridge)

    def add_host(self, host: str) -> str:
        """A host's NIC for one VM: a bridge with an uplink to the switch; its taps go on it (returns its name).

        A VM's two failover NICs share one uplink, as a VF and a standby on
        the same host do. The NIC delivers every frame for the VM to each of
        its taps and learns nothing from them: which copy counts is
        net_failover's choice (it drops the standby's while a primary is
        registered). No tap can capture the failover MAC, so neither
        QEMU's self-announce through an emulated primary the guest does
        not drive yet, nor the switch's memory of a primary that was
        unplugged, steers traffic away from the NIC the guest uses. The
        switch (:attr:`BRIDGE`) learns hosts, and QEMU's announce moves the
        MAC to the destination host.
        """
        nic, uplink = f"{host}-nic", f"{host}-up"
        self._add_bridge(nic)
        self._host_taps[nic] = []
        self.bridge_ns.run(["ip", "link", "add", uplink, "type", "veth", "peer", "name", f"{host}-sw"])
        self.bridge_ns.run(["ip", "link", "set", uplink, "master", nic, "up"])
        self.bridge_ns.run(["ip", "link", "set", f"{host}-sw", "master", self.BRIDGE, "up"])
        return nic

    def remove_host(self, host: str) -> None:
        """Delete *host*'s NIC with its uplink and taps (its QEMU is gone): a long ping-pong would pile them up."""
        nic = f"{host}-nic"
        if nic not in self._host_taps:
            return
        for tap in self._host_taps.pop(nic):
            self.remove_tap(tap)
        self.bridge_ns.run(["ip", "link", "del", f"{host}-up"])  # its peer on the switch goes with it
        self.bridge_ns.run(["ip", "link", "del", nic])
        self._extra_bridges.remove(nic)

    def remove_tap(self, name: str) -> None:
        """Delete tap *name* (its QEMU is gone): a long ping-pong would otherwise pile up bridge ports."""
        self.bridge_ns.run(["ip", "link", "del", name])
        self.taps.remove(name)

    def peer_mac(self) -> str:
        out = self.peer_ns.run(["cat", f"/sys/class/net/{self.PEER_IF}/address"])
        return out.strip()

    def delete(self) -> None:
        """Remove both namespaces; their taps, bridge and veth go with them."""
        self.bridge_ns.delete()
        self.peer_ns.delete()
        self.taps.clear()
        self._extra_bridges.clear()
        self._host_taps.clear()
