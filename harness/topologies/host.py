"""The host topology: the failover guest runs on hypervisors a lab inventory names, reached over
SSH, and its primary is a real SR-IOV VF passed through with VFIO.

::

    harness machine ══ SSH ══▶ source host:      QEMU ── VF (vfio-pci) ──┐
          │                                        └── tap ── standby_bridge ─┤ the VFs'
          │          ══ SSH ══▶ destination host: QEMU -incoming (its VF)    │ network
          └─ peer (a namespace here, or on a lab host) ──────────────────────┘
                     source ── migration stream over the management network ──▶ destination

Each QEMU binds only its host's loopback for QMP and the guest agent; the
host's SSH connection carries them (:mod:`harness.lab.tunnel`), so the harness
drives it like a local VM. The guest's kernel and initramfs are copied to a
host that does not already have them; everything the bed puts on a host (its
scratch directory, taps, filter entries, VF claims) it takes away again, and
notes on the host how to (:mod:`harness.lab.sweep`, for a run killed outright).

With several failover pairs in the inventory (``[pairs.<name>]``), each bed
runs on the pair its process claimed (:mod:`harness.lab.pairs`), its guest with
that pair's failover MAC and address, so that the pairs run at once.

A peer on a lab host runs its programs there through
:mod:`harness.lab.remote_command`, their records put on the harness's clock.
What a run learns of the hosts once (the doctor's verdict, KVM, file digests)
its beds share (:class:`LabSession`).

A reply's path is told on the hosts: the probe replies that a host saw enter
its bridge from the guest's standby tap (``tcpdump`` there) took the
standby; every other reply the peer received took the VF.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Interface
from pathlib import Path
from typing import ClassVar, Literal

from harness import progress
from harness.accel import probe_kvm
from harness.config import RunConfig
from harness.errors import CapabilityMissing, ConfigError, HarnessError
from harness.guest import CommandResult, Guest
from harness.host_process import HostProcess
from harness.hosts import LocalHost
from harness.hypervisor import L2Paths
from harness.image import GuestImage
from harness.lab.doctor import connect, diagnose_host, emulated_by_tcg
from harness.lab.inventory import LOCAL, HostSpec, Inventory, Pair, guest_ip
from harness.lab.pairs import CLAIMS_DIR, SharedPeerAddress
from harness.lab.ssh import SocketFactory, SSHHost
from harness.lab.sweep import (
    KILL_LISTED,
    OWNER_FILE,
    PEER_ADDRESS_NOTE,
    SCRATCH_ROOT,
    UNDO_FILE,
    owner_record,
    undo_lines,
)
from harness.lab.tunnel import LOOPBACK, LocalForward, RemoteForward
from harness.metrics import PRIMARY
from harness.migration import PLAIN_MIGRATION, DestinationPrimary, MigrationPlan, MigrationResult
from harness.netns import Addressing, Netns
from harness.sriov.claims import VfClaims, VirtualFunction
from harness.sriov.mac_policy import NO_MAC, pf_shares_mac
from harness.topologies import DEGRADED_DESTINATION, HOTPLUG_STYLE
from harness.topologies.common import Carrier, RemoteBedCommon, degrade_destination
from harness.topologies.devices import NATIVE_HOTPLUG_ARGS
from harness.topologies.emulated_nesting import emulated_nesting_fault
from harness.topologies.vfio import MISSING_VF_ADDRESS, HypervisorPathCapture, failover_guest_kernel, l2_spec, with_vfs
from harness.traffic.icmp import parse_probe
from harness.traffic.pcap import read_pcap
from harness.traffic.probe import PathCapture
from harness.vm import VM, Accel, TapNetdev, VMPaths, VMSpec

log = logging.getLogger(__name__)

BOOT_TIMEOUT_S = 600.0
MIGRATION_PORT = 4700
# The agent chardev's port on a host's loopback: one per VM of a bed, from a per-process base.
AGENT_PORT_BASE = 20000
CAPTURE_START_S = 30.0


def guest_addressing(peer: IPv4Interface, failover_mac: str, peer_mac: str, pair_index: int = 0) -> Addressing:
    """The guest of the *pair_index*-th pair takes the (pair_index+1)-th address after the peer's, in the
    peer's subnet (:func:`~harness.lab.inventory.guest_ip`). Pure."""
    try:
        guest = guest_ip(peer, pair_index)
    except ValueError as e:
        raise ConfigError(f"peer.address: {e}") from None
    return Addressing(str(peer.ip), str(guest), peer.network.prefixlen, failover_mac, peer_mac)


def short_name(tag: str, what: str) -> str:
    """An interface name (at most 15 characters) unique to this harness process, bed and *what*."""
    digest = hashlib.sha256(f"{os.getpid()}-{tag}-{what}".encode()).hexdigest()[:8]
    return f"fohx{digest}{what[:3]}"


@dataclass
class LabSession:
    """What a run finds out about the lab hosts once, not per case: whether each host is ready (the
    doctor's findings: a VF's holder, a missing bridge, ... ; the beds give back all they change), which
    accelerator the guest gets there, and the digests of the local files staged to the hosts."""

    problems: dict[str, list[str]] = field(default_factory=dict)  # host → the doctor's failures
    under_tcg: set[str] = field(default_factory=set)  # hosts whose CPU is TCG's: emulated hypervisors
    guest_accel: dict[str, tuple[Accel, str]] = field(default_factory=dict)  # host → choice, why
    digests: dict[Path, str] = field(default_factory=dict)

    def digest(self, local: Path) -> str:
        if local not in self.digests:
            self.digests[local] = hashlib.sha256(local.read_bytes()).hexdigest()
        return self.digests[local]


@dataclass
class Slot:
    """Where one VM of the bed runs: a host, the VF it passes through, its standby's tap."""

    name: str  # the inventory's host name
    host: LocalHost | SSHHost
    spec: HostSpec
    vf_address: str
    tap: str
    scratch: str
    vf: VirtualFunction | None = None
    claims: VfClaims | None = None
    mac_cleared: bool = False  # vf_mac_policy cleared: the VF's MAC is cleared while the primary is away


class HostStandbyCapture:
    """``tcpdump`` on a host: the probe replies the guest sent through its standby's *tap* there."""

    def __init__(self, slot: Slot, guest_ip: str, name: str) -> None:
        self.host, self._guest_ip = slot.host, guest_ip
        self._pcap = f"{slot.scratch}/{name}.pcap"
        self._output = io.BytesIO()
        # -Q in: what the guest sent (the tap's ingress); -U: each packet written at once; -Z root: the
        # scratch directory is root's.
        self._proc = HostProcess(self.host, f"{slot.scratch}/{name}",
                                 ["tcpdump", "-i", slot.tap, "-Q", "in", "-n", "-U", "-Z", "root", "-w", self._pcap,
                                  f"icmp and src host {guest_ip}"], self._output)
        self._seqs: set[int] | None = None

    def ready(self) -> bool:
        self._proc.sync_output()
        return b"listening on" in self._output.getvalue()

    def errors(self) -> str:
        return self._output.getvalue().decode(errors="replace").strip()[-1000:]

    def request_stop(self) -> None:
        if self._proc.poll() is None:
            self.host.run(["kill", "-TERM", str(self._proc.pid)])

    def standby_seqs(self) -> set[int]:
        """The sequence numbers of the replies seen on the standby's tap (stops the capture)."""
        if self._seqs is None:
            self._proc.terminate()
            data = self.host.take_file(self._pcap, "reading the capture", timeout=120.0)
            guest = socket.inet_aton(self._guest_ip)
            self._seqs = {seq for _, frame in read_pcap(data)
                          if (seq := parse_probe(frame, src_ip=guest)) is not None}
        return self._seqs


@dataclass(eq=False)  # identity semantics: beds are tracked in a set for atexit cleanup
class HostBed(RemoteBedCommon):
    """A failover bed on the lab hosts of *inventory*: the guest on *pair*'s source VF, migrating to its
    destination VF. :meth:`teardown` undoes all of it (idempotent)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({HOTPLUG_STYLE, DEGRADED_DESTINATION})
    boot_timeout_s: ClassVar[float] = BOOT_TIMEOUT_S

    config: RunConfig
    image: GuestImage
    accel: Accel  # this machine's; the guest's is probed on the source host
    tag: str
    run_dir: Path
    artifacts_dir: Path
    inventory: Inventory
    pair: Pair  # one of inventory.failover_pairs, claimed by this process
    hotplug: Literal["acpi", "native"] = "acpi"
    paused: bool = False
    # How the harness reaches the hosts (tests: from inside a namespace); None: directly.
    sock_factory: SocketFactory | None = None
    lab: LabSession = field(default_factory=LabSession)  # the run's, shared by its beds
    addressing: Addressing = field(init=False)
    vms: list[VM] = field(default_factory=list, init=False)
    source: VM = field(init=False)
    guest: Guest = field(init=False)
    boot_s: float | None = field(default=None, init=False)
    guest_accel_choice: Accel = field(default="tcg", init=False)
    guest_accel_reason: str = field(default="", init=False)
    guest_kernel: str | None = field(default=None, init=False)
    _slots: list[Slot] = field(default_factory=list, init=False)
    _connected: dict[str, LocalHost | SSHHost] = field(default_factory=dict, init=False)
    _slot_of: dict[str, Slot] = field(default_factory=dict, init=False)  # VM name → where it runs
    _carriers: dict[str, list[Carrier]] = field(default_factory=dict, init=False)  # per VM: its tunnels
    _claims: list[VfClaims] = field(default_factory=list, init=False)
    _undo: list[tuple[LocalHost | SSHHost, list[str]]] = field(default_factory=list, init=False)
    _clock_offsets: dict[str, tuple[float, float]] = field(default_factory=dict, init=False)
    _peer_address: SharedPeerAddress | None = field(default=None, init=False)  # set while the bed uses it
    _dest_count: int = field(default=0, init=False)
    _staged: dict[str, tuple[str, str]] = field(default_factory=dict, init=False)  # host → kernel, initrd paths

    def __post_init__(self) -> None:
        peer = self.inventory.peer
        try:
            self.addressing = guest_addressing(peer.address, self.pair.failover_mac, self._read_peer_mac(),
                                               self.pair.index)
        except BaseException:
            self._close_connections()
            raise

    # -- the peer: a namespace (or the root one) here or on a lab host --------------------

    def _peer_host(self) -> LocalHost | SSHHost:
        name = self.inventory.peer.host
        return LocalHost(LOCAL) if name == LOCAL else self._host(name)

    def _peer_netns_prefix(self) -> list[str]:
        namespace = self.inventory.peer.namespace
        return Netns(namespace).exec_prefix() if namespace else []

    def _peer_files(self) -> str:
        """The peer host's scratch directory (the harness's traffic modules, captures)."""
        return f"{SCRATCH_ROOT}/{short_name(self.tag, 'peer')}"

    def _relay_prefix(self, collect: dict[str, Path] | None = None) -> list[str]:
        """What runs a peer program on the peer's lab host (:mod:`harness.lab.remote_command`)."""
        peer = self.inventory.peer
        assert self.config.inventory is not None  # RunConfig requires it for this topology
        offset = self._clock_offsets.get(peer.host, (0.0, 0.0))[0]
        return [sys.executable, "-m", "harness.lab.remote_command", "--inventory", str(self.config.inventory.resolve()),
                "--host", peer.host, "--files", self._peer_files(), "--clock-offset", f"{offset:.6f}",
                *(["--netns", peer.namespace] if peer.namespace else []),
                *(arg for remote, local in (collect or {}).items() for arg in ("--collect", f"{remote}={local}")),
                "--"]

    def _peer_is_remote(self) -> bool:
        return isinstance(self._peer_host(), SSHHost)

    def peer_exec_prefix(self) -> list[str]:
        return self._relay_prefix() if self._peer_is_remote() else self._peer_netns_prefix()

    def peer_interface(self) -> str:
        return self.inventory.peer.interface

    def peer_mac(self) -> str:
        return self.addressing.peer_mac

    def _peer_ip(self, *args: str) -> CommandResult:
        return self._peer_host().run([*self._peer_netns_prefix(), "ip", *args])

    def _read_peer_mac(self) -> str:
        peer = self.inventory.peer
        shown = self._peer_ip("-j", "link", "show", "dev", peer.interface)
        if shown.rc != 0:
            where = f"namespace {peer.namespace}" if peer.namespace else "the root namespace"
            raise ConfigError(f"peer.interface: no interface {peer.interface!r} in {where} on {peer.host}: "
                              f"{shown.output.strip()}")
        return str(json.loads(shown.output)[0]["address"])

    def _address_peer(self) -> None:
        """Give the peer its address unless it has it (taken away again when the last bed of this machine
        that uses it is torn down, if a bed added it: :class:`~harness.lab.pairs.SharedPeerAddress`); on a
        lab host, a scratch directory for the programs the peer runs there."""
        peer = self.inventory.peer
        remote = self._peer_is_remote()
        if remote:
            host, files = self._peer_host(), self._peer_files()
            self._make_scratch(host, files)
            # A program whose local relay was killed outright (the harness killed) runs on: its pid file says.
            self._undo.append((host, ["sh", "-c", KILL_LISTED, "kill-listed", files]))

        def present() -> bool:
            shown = self._peer_ip("-j", "addr", "show", "dev", peer.interface).output
            return str(peer.address) in {f"{a['local']}/{a['prefixlen']}" for link in json.loads(shown or "[]")
                                         for a in link["addr_info"]}

        def add() -> None:
            if remote:
                self._note_undo(host, files, [{"argv": [*self._peer_netns_prefix(), "ip", "addr", "del",
                                                        str(peer.address), "dev", peer.interface],
                                               PEER_ADDRESS_NOTE: True}])
            added = self._peer_ip("addr", "add", str(peer.address), "dev", peer.interface)
            if added.rc != 0:
                raise ConfigError(f"peer.address: cannot add {peer.address} to {peer.interface}: {added.output}")

        self._peer_address = SharedPeerAddress(self.config.cache_dir / CLAIMS_DIR, peer)
        self._peer_address.join(present, add)
        self._peer_ip("link", "set", peer.interface, "up")

    # -- building -------------------------------------------------------------------------

    def build(self) -> HostBed:
        """Check the hosts, take a VF on each, and boot the guest on the source host."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            self._address_peer()
            with progress.step(f"bed {self.tag}: checking the lab hosts"):
                self._plan_slots()
            with progress.step(f"bed {self.tag}: a VF and a standby tap on each host"):
                for slot in self._slots:
                    self._prepare(slot)
            kernel, modules, self.guest_kernel = failover_guest_kernel(self.config, self.image)
            source = self._slots[0]
            for slot in self._slots:
                if slot.name not in self._staged:
                    self._staged[slot.name] = (self._stage(slot, kernel), self._stage(slot, self.image.initrd))
            staged = self._staged
            with progress.step(f"bed {self.tag}: can the guest use KVM on {source.name}?") as step:
                self.guest_accel_choice, self.guest_accel_reason = self._guest_accel(source, staged[source.name][0])
                step.result = self.guest_accel_choice
            for name in {slot.name: None for slot in self._slots} | {self.inventory.peer.host: None}:
                if name not in self._clock_offsets and name != LOCAL:
                    self._clock_offsets[name] = self._clock_offset(self.inventory.hosts[name].address)
            assert source.vf is not None
            spec = l2_spec("src", source.spec.qemu_binary, self.image, self.addressing, (source.vf,),
                           kernel=Path(staged[source.name][0]), modules=modules, accel=self.guest_accel_choice,
                           memory_mib=self.config.guest_memory_mib, paused=self.paused,
                           extra_args=NATIVE_HOTPLUG_ARGS if self.hotplug == "native" else ())
            spec = replace(spec, initrd=Path(staged[source.name][1]), netdevs=(TapNetdev("hn0", source.tap),))
            self._boot_source(partial(self._launch, source, spec))
        except BaseException:
            self.teardown()
            raise
        return self

    @property
    def guest_accel(self) -> Accel:
        return self.guest_accel_choice

    def _host(self, name: str) -> LocalHost | SSHHost:
        if name not in self._connected:
            self._connected[name] = connect(name, self.inventory.hosts[name], self.sock_factory)
        return self._connected[name]

    def _plan_slots(self) -> None:
        """Source and destination: the pair's VFs; each host checked (the doctor's findings, on the pair's
        VFs only: another worker's pair may hold the others) before anything on it changes."""
        peer = self.inventory.peer
        for name in dict.fromkeys([*self.pair.hosts, *([peer.host] if peer.host != LOCAL else [])]):
            spec = self.inventory.hosts[name]
            if spec.standby_bridge is None and name in self.pair.hosts:
                raise ConfigError(f"hosts.{name}.standby_bridge: the host topology needs the bridge on {name} "
                                  "that reaches the VFs' network, for the virtio-net standby's tap")
            if name not in self.lab.problems:
                vfs = [end.vf for end in self.pair.ends if end.host == name]
                findings = diagnose_host(self._host(name), spec, peer if name == peer.host else None, vfs=vfs)
                self.lab.problems[name] = [f.render() for f in findings if f.ok is False]
                if any(f.area == "cpu" and emulated_by_tcg(f.detail) for f in findings):
                    self.lab.under_tcg.add(name)
            if self.lab.problems[name]:
                raise CapabilityMissing(f"lab host {name} is not ready: " + "; ".join(self.lab.problems[name]))
        for role, end in zip(("src", "dst"), self.pair.ends, strict=True):
            self._slots.append(Slot(end.host, self._host(end.host), self.inventory.hosts[end.host], end.vf,
                                    short_name(self.tag, role), f"{SCRATCH_ROOT}/{short_name(self.tag, role)}"))

    def _prepare(self, slot: Slot) -> None:
        """The slot's VF with the failover MAC on vfio-pci, the standby's tap on the bridge, and (vf_mac_policy
        shared) the MAC in the PF's own filter so that frames for it also reach the bridge while the VF has it."""
        host, spec, mac = slot.host, slot.spec, self.addressing.failover_mac
        self._make_scratch(host, slot.scratch)
        claims = VfClaims(host, spec.pf, note=lambda vf: self._note_undo(host, slot.scratch, [{"vf": vf}]))
        self._claims.append(claims)
        slot.vf, slot.claims = claims.take(slot.vf_address, mac), claims
        assert spec.standby_bridge is not None
        steps = [(["ip", "tuntap", "add", "dev", slot.tap, "mode", "tap"], ["ip", "link", "del", slot.tap]),
                 (["ip", "link", "set", slot.tap, "master", spec.standby_bridge, "up"], None)]
        forget = ["bridge", "fdb", "del", mac, "dev", spec.pf, "self"]
        if pf_shares_mac(self.config.vf_mac_policy) and (host, forget) not in self._undo:
            # one entry per PF (a local migration's two slots share it)
            steps.append((["bridge", "fdb", "add", mac, "dev", spec.pf, "self", "permanent"], forget))
        self._note_undo(host, slot.scratch, [{"argv": undo} for _, undo in steps if undo is not None])
        for argv, undo in steps:
            host.check(argv, f"setting up {slot.tap}")
            if undo is not None:
                self._undo.append((host, undo))

    def _make_scratch(self, host: LocalHost | SSHHost, scratch: str) -> None:
        """A scratch directory on *host* that says who made it (removed in teardown; by the lab sweep if the
        harness was killed)."""
        host.check(["mkdir", "-p", scratch], "making the scratch directory")
        self._undo.append((host, ["rm", "-rf", "--", scratch]))
        host.write_file(f"{scratch}/{OWNER_FILE}", owner_record())

    def _note_undo(self, host: LocalHost | SSHHost, scratch: str, entries: list[dict[str, object]]) -> None:
        """How to undo changes about to be made on *host*, for the lab sweep (:mod:`harness.lab.sweep`)."""
        host.check(["tee", "-a", f"{scratch}/{UNDO_FILE}"], "noting how to undo", input=undo_lines(entries))

    def _stage(self, slot: Slot, local: Path) -> str:
        """*local*'s path on the slot's host: the same path where the host has the same file (a shared
        filesystem), else a copy in the scratch directory."""
        digest = self.lab.digest(local)
        there = slot.host.run(["sha256sum", "--", str(local)])
        if there.rc == 0 and there.output.split()[:1] == [digest]:
            return str(local)
        remote = f"{slot.scratch}/{local.name}"
        with progress.step(f"bed {self.tag}: copying {local.name} to {slot.name}"):
            slot.host.put_file(local, remote)
        return remote

    def _guest_accel(self, slot: Slot, kernel: str) -> tuple[Accel, str]:
        if self.config.accel in ("kvm", "tcg"):
            return self.config.accel, "forced by --accel"
        if slot.name not in self.lab.guest_accel:
            usable, why = probe_kvm(slot.spec.qemu_binary, Path(kernel), host=slot.host)
            self.lab.guest_accel[slot.name] = ("kvm" if usable else "tcg"), f"on {slot.name}: {why}"
        return self.lab.guest_accel[slot.name]

    def _clock_offset(self, address: str) -> tuple[float, float]:
        """(offset, uncertainty) in seconds of the clock of the host at *address* against ours (QMP events
        and a remote peer's records carry its clock)."""
        if address == LOCAL:
            return 0.0, 0.0
        target = socket.gethostbyname(address)
        out = subprocess.run([sys.executable, "-m", "harness.traffic.clock_offset", target],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise HarnessError(f"measuring the clock of {address} (ICMP timestamps to {target}): "
                               f"{out.stderr.strip()}")
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        return float(measured["offset_s"]), float(measured["uncertainty_s"])

    def _launch(self, slot: Slot, spec: VMSpec) -> VM:
        """Start *spec*'s QEMU on the slot's host, its QMP and agent carried by the SSH connection."""
        base = VMPaths.for_vm(spec.name, self.run_dir, self.artifacts_dir)
        forwards: list[Carrier] = []
        self._carriers[spec.name] = forwards
        host = slot.host
        console = f"{slot.scratch}/{spec.name}-console.log"
        if isinstance(host, SSHHost):
            qmp = RemoteForward(host, base.qmp_socket)
            forwards.append(qmp)
            agent_port = AGENT_PORT_BASE + (os.getpid() * 8 + len(self.vms)) % 30000
            forwards.append(LocalForward(host, base.control_socket, agent_port))
            paths: VMPaths = L2Paths(**vars(base), qmp_relay=f"{LOOPBACK}:{qmp.remote_port}",
                                     control_listen=f"{LOOPBACK}:{agent_port}", l1_console=console)
        else:
            paths = replace(base, console_log=Path(console))
        vm = VM(spec, paths, spawn=lambda argv, output: HostProcess(
                    host, f"{slot.scratch}/{spec.name}", argv, output, collect={console: base.console_log}),
                clock_offset_s=self._clock_offsets[slot.name][0])
        self.vms.append(vm)
        self._slot_of[vm.name] = slot
        vm.launch(connect_timeout=120.0)
        return vm

    # -- what a case does -----------------------------------------------------------------

    def facts(self) -> dict[str, object]:
        facts: dict[str, object] = {"run.boot_s": self.boot_s, "run.guest_accel": self.guest_accel_choice,
                                    "run.guest_accel_reason": self.guest_accel_reason,
                                    "run.guest_kernel": self.guest_kernel, "run.pair": self.pair.name,
                                    "run.hosts": ", ".join(f"{s.name} VF {s.vf_address}" for s in self._slots)}
        return facts | self._clock_facts()

    def start_destination(self, *, primary: DestinationPrimary = "same") -> VM:
        """Start an incoming guest on the destination slot, with its VF as the primary."""
        name = self._next_destination_name()
        current = self._slot_of[self.source.name]
        slot = next(s for s in self._slots if s is not current)
        assert slot.vf is not None
        spec = with_vfs(self.source.spec.as_destination(name, (TapNetdev("hn0", slot.tap),)), (slot.vf,))
        kernel, initrd = self._staged[slot.name]
        spec = replace(spec, kernel=Path(kernel), initrd=Path(initrd))
        destination = self._launch(slot, degrade_destination(spec, primary, host=MISSING_VF_ADDRESS))
        self._set_vf_macs(destination, cleared=False)  # before QEMU plugs the VF into the guest
        return destination

    def migrate(self, destination: VM, plan: MigrationPlan = PLAIN_MIGRATION) -> MigrationResult:
        """Migrate over the management network; on success the destination becomes the source. Each pair
        its own ports: two pairs' guests may migrate to one host at once."""
        slot = self._slot_of[destination.name]
        port = MIGRATION_PORT + self.pair.index + len(self.inventory.failover_pairs) * self._dest_count
        return self._migrate_across(destination, f"tcp:{slot.spec.mgmt_address}:{port}", plan)

    def _set_vf_macs(self, vm: VM, *, cleared: bool) -> None:
        slot = self._slot_of[vm.name]
        if cleared == slot.mac_cleared:
            return
        assert slot.claims is not None and slot.vf is not None
        slot.claims.set_mac(slot.vf, NO_MAC if cleared else self.addressing.failover_mac)
        slot.mac_cleared = cleared

    def expected_log_lines(self) -> list[str]:
        return []

    def qemu_messages(self) -> list[str]:
        return [line for vm in self.vms for line in vm.messages()]

    def emulation_fault(self, failure: BaseException) -> str | None:
        """On lab hosts that are themselves VMs under TCG (the doctor's ``cpu``), see
        :func:`~harness.topologies.emulated_nesting.emulated_nesting_fault`: the guest's QEMUs' output."""
        emulated = sorted({slot.name for slot in self._slots} & self.lab.under_tcg)
        if not emulated:
            return None
        return emulated_nesting_fault(failure, self._qemu_outputs(), f"lab host {', '.join(emulated)}",
                                      self._quiet_resets())

    def path_capture(self, log_path: Path, pair: int = 1) -> HypervisorPathCapture:
        guest_ip = self.addressing.guest_ip
        ports = {self.peer_interface(): PRIMARY}
        if self._peer_is_remote():
            pcap = f"{self._peer_files()}/{log_path.stem}.pcapng"
            peer = PathCapture(self._relay_prefix(collect={pcap: log_path.with_suffix(".pcapng")}), guest_ip, ports,
                               log_path, pcap=pcap)
        else:
            peer = PathCapture(self.peer_exec_prefix(), guest_ip, ports, log_path)
        return HypervisorPathCapture.start(peer, [
            partial(HostStandbyCapture, slot, guest_ip, f"{log_path.stem}-{slot.tap}") for slot in self._slots])

    def teardown(self) -> None:
        """Stop the guests, undo every change on the hosts, close the connections. Safe twice."""
        self._retire_all()
        for claims in reversed(self._claims):
            claims.give_back()
        self._claims.clear()
        while self._undo:
            host, argv = self._undo.pop()
            try:
                result = host.run(argv)
                if result.rc != 0:
                    log.warning("bed %s: %s on %s: %s", self.tag, " ".join(argv), host.name, result.output.strip())
            except HarnessError as e:
                log.warning("bed %s: %s on %s: %s", self.tag, " ".join(argv), host.name, e)
        if self._peer_address is not None:
            peer = self.inventory.peer
            self._peer_address.leave(lambda: self._peer_ip("addr", "del", str(peer.address), "dev", peer.interface))
            self._peer_address = None
        self._close_connections()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _close_connections(self) -> None:
        for host in self._connected.values():
            host.close()

