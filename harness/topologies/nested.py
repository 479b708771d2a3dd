"""The nested topology: the failover guest (L2) runs inside an L1 hypervisor VM and
its primary is an emulated igb's SR-IOV VF passed through with VFIO.

::

    peer ns: peer0 ──veth── bridge ns: br0 ─┬─ l1a-pf ── L1 a: igb PF ─┬─ VF (vfio-pci) ── L2 primary
                                            │                   br0: PF ─┴─ l2sby ── L2 standby
                                            └─ l1b-pf ── L1 b (the same)
                            bridge ns: mgmt0 (198.19.255.254) ─┬─ l1a-mg (198.19.255.1)
                                                               └─ l1b-mg (198.19.255.2)

The L2 QEMU is the host's own, run inside L1 (see :mod:`harness.hypervisor`);
its QMP and agent reach the harness over the management bridge through
relays (:mod:`harness.relay`), so the harness drives it like any other VM.
:class:`NestedBed` migrates the L2 between the two L1s over the management
link; each L1 passes its own VF, with the failover MAC, to the L2 it hosts.

Both data paths leave through the same igb tap in L0, so a reply's path is
told on the L1 side: a reply the source L1 saw arrive from ``l2sby`` came by
the standby; one seen only in L0 came by the VF (:class:`~harness.topologies.vfio.HypervisorPathCapture`).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal

from harness import progress
from harness.accel import probe_kvm
from harness.config import NestedL2Accel, RunConfig
from harness.errors import CapabilityMissing, GuestError
from harness.guest import Guest
from harness.host_process import HostProcess
from harness.hypervisor import L1_SCRATCH, L1Host, L2Paths, l1_spec, start_l1
from harness.image import L1_RECIPE_DIR, GuestImage, ImageBuilder
from harness.metrics import PRIMARY, STANDBY
from harness.migration import PLAIN_MIGRATION, DestinationPrimary, MigrationPlan, MigrationResult
from harness.netns import Addressing, TestNetwork
from harness.relay import Relay
from harness.sriov.claims import VirtualFunction
from harness.sriov.mac_policy import NO_MAC, pf_shares_mac
from harness.topologies import DEGRADED_DESTINATION, HOTPLUG_STYLE, SECOND_PAIR
from harness.topologies.common import Carrier, RemoteBedCommon, degrade_destination
from harness.topologies.devices import NATIVE_HOTPLUG_ARGS
from harness.topologies.emulated_nesting import emulated_nesting_fault
from harness.topologies.vfio import (
    MISSING_VF_ADDRESS,
    HypervisorPathCapture,
    failover_guest_kernel,
    l2_spec,
    standby_tap,
    with_vfs,
)
from harness.traffic.probe import PathCapture
from harness.vm import VM, Accel, VMPaths, VMSpec

log = logging.getLogger(__name__)

# What an L2's destination QEMU prints when it lands on the other TCG L1 (their TSCs differ).
L1_TSC_MISMATCH = (r"warning: TSC frequency mismatch between VM \(\d+ kHz\) and host \(\d+ kHz\), "
                   r"and TSC scaling unavailable$")

MGMT_PREFIX = "198.19.255"
L0_MGMT_IP = f"{MGMT_PREFIX}.254"
MGMT_PREFIX_LEN = 24
QMP_RELAY_PORT = 4400
L2_CONTROL_PORT = 4500
L1_BRIDGE = "br0"
# How long the L2 guest may take to boot: under TCG in L1 (itself under TCG) many minutes;
# under KVM in L1 it takes 20-40 s on this project's CI, and more is a hang, not a slow boot.
L2_BOOT_TIMEOUT_S = 900.0
L2_KVM_BOOT_TIMEOUT_S = 300.0
L1_NAMES = ("l1a", "l1b")
MIGRATION_PORT = 4600
# The profile whose limits are sized for the guest under TCG inside TCG L1s.
NESTED_TCG_IN_TCG_PROFILE = "profiles/nested-tcg-in-tcg.toml"


def connect_standbys_to_pf(host: L1Host, failover_macs: list[str], pf_filter: bool = True) -> None:
    """In L1: a bridge joins the PF and the L2 standbys' taps (one per MAC of *failover_macs*, in
    pair order), so every path reaches the peer through the igb.

    With *pf_filter* (:mod:`harness.sriov.mac_policy`'s ``shared``) each failover MAC also goes into
    the PF's own MAC filter (``bridge fdb add ... self``, the step the kernel's net_failover
    documentation takes after the VF leaves the guest): igb, as the 82576 it emulates, steers a
    frame for a VF's MAC to that VF alone, even while the VF is detached from the guest, and the
    standby would get nothing until the VF is back. With the MAC in the PF's filter too the frame
    goes to both; net_failover drops the standby's copy while the guest has its primary.

    The bridge learns nothing on the PF's port: the VF's broadcasts come back to the PF through
    igb's internal switch, and a bridge that learned the failover MAC there would drop every
    frame for the standby (in and out the same port) until the guest happened to send one first.
    """
    assert host.pf_ifname is not None, "preflight() first"
    ip = ["/usr/bin/ip"]
    commands = [[*ip, "link", "add", L1_BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0"],
                [*ip, "link", "set", host.pf_ifname, "master", L1_BRIDGE, "up"],
                [*ip, "link", "set", "dev", host.pf_ifname, "type", "bridge_slave", "learning", "off"]]
    for pair, mac in enumerate(failover_macs, start=1):
        commands += [[*ip, "tuntap", "add", "dev", standby_tap(pair), "mode", "tap"],
                     [*ip, "link", "set", standby_tap(pair), "master", L1_BRIDGE, "up"]]
        if pf_filter:
            commands.append(["/usr/sbin/bridge", "fdb", "add", mac, "dev", host.pf_ifname, "self", "permanent"])
    for argv in [*commands, [*ip, "link", "set", L1_BRIDGE, "up"]]:
        result = host.host_run(argv)
        if result.rc != 0:
            raise GuestError(f"{host.name}: {' '.join(argv)} exited {result.rc}: {result.output.strip()}")


def address_mgmt_bridge(network: TestNetwork) -> None:
    """Give the bridge namespace its address on the management bridge (the relays listen there)."""
    network.bridge_ns.run(["ip", "addr", "add", f"{L0_MGMT_IP}/{MGMT_PREFIX_LEN}", "dev", network.MGMT_BRIDGE])


def l1_clock_offset(network: TestNetwork, l1_mgmt_ip: str) -> tuple[float, float]:
    """(offset, uncertainty) in seconds of an L1's clock against the harness's, measured over the
    management link (:mod:`harness.traffic.clock_offset`)."""
    out = network.bridge_ns.run([sys.executable, "-m", "harness.traffic.clock_offset", l1_mgmt_ip])
    measured = json.loads(out.strip().splitlines()[-1])
    return float(measured["offset_s"]), float(measured["uncertainty_s"])


def launch_l2(host: L1Host, spec: VMSpec, network: TestNetwork, run_dir: Path, artifacts_dir: Path,
              l1_mgmt_ip: str, qmp_port: int = QMP_RELAY_PORT,
              control_port: int = L2_CONTROL_PORT, clock_offset_s: float = 0.0) -> tuple[VM, list[Relay]]:
    """Start *spec*'s QEMU in *host* with its QMP and agent relayed to unix sockets in *run_dir*
    (each L2 of a bed needs its own *qmp_port*: the relays all listen in the bridge namespace).
    Its console, a file in L1, is copied into *artifacts_dir* when it ends; its QMP events are
    moved from L1's clock to the harness's by *clock_offset_s* (:func:`l1_clock_offset`)."""
    base = VMPaths.for_vm(spec.name, run_dir, artifacts_dir)
    paths = L2Paths(**vars(base), qmp_relay=f"{L0_MGMT_IP}:{qmp_port}",
                    control_listen=f"{l1_mgmt_ip}:{control_port}", l1_console=f"{L1_SCRATCH}/{spec.name}-console.log")
    prefix = network.bridge_ns.exec_prefix()
    relays = [Relay(prefix, "tcp-to-unix", paths.qmp_relay, str(paths.qmp_socket),
                    artifacts_dir / f"{spec.name}-relay.log")]
    try:
        relays.append(Relay(prefix, "unix-to-tcp", str(paths.control_socket), paths.control_listen,
                            artifacts_dir / f"{spec.name}-relay.log"))
        vm = VM(spec, paths, spawn=lambda argv, output: HostProcess(
                    host.userspace(), f"{L1_SCRATCH}/{spec.name}", argv, output,
                    collect={paths.l1_console: paths.console_log}),
                clock_offset_s=clock_offset_s)
        vm.launch(connect_timeout=120.0)
    except BaseException:
        for relay in relays:
            relay.close()
        raise
    return vm, relays


def l2_accel(host: L1Host, qemu_binary: str, kernel: Path) -> tuple[Accel, str]:
    """KVM for L2 where a guest really boots under KVM inside L1, else TCG; and why.

    L1 offers KVM where its CPU can virtualize: under KVM with nested
    virtualization, and also under TCG, which emulates AMD's SVM; L2 then runs
    under one level of TCG instead of TCG inside TCG.
    """
    if host.run("test -c /dev/kvm").rc != 0:
        return "tcg", "L1 has no /dev/kvm (its CPU offers neither VMX nor SVM)"
    usable, why = probe_kvm(qemu_binary, kernel, host=host.userspace())
    return ("kvm" if usable else "tcg"), f"in {host.name}: kvm {'usable' if usable else 'unusable'}: {why}"


def choose_l2_accel(wanted: NestedL2Accel, probe: Callable[[], tuple[Accel, str]]) -> tuple[Accel, str]:
    """L2's accelerator and why: what *probe* finds (:func:`l2_accel`) unless the run's profile names
    one (``nested_l2_accel``), since its limits hold only for that: TCG without probing, KVM or a
    :class:`CapabilityMissing` naming the profile for the fallback."""
    if wanted == "tcg":
        return "tcg", "the profile asks for TCG (nested_l2_accel tcg)"
    accel, why = probe()
    if wanted == "kvm" and accel != "kvm":
        raise CapabilityMissing(f"nested_l2_accel kvm: the guest cannot use KVM inside L1 ({why}); this profile's "
                                f"limits are for the guest under KVM: run {NESTED_TCG_IN_TCG_PROFILE}, sized for "
                                "TCG inside TCG")
    return accel, why


class L1StandbyCapture:
    """``capture_main`` inside one L1: the probe replies that arrive there from an L2 standby's *tap*."""

    def __init__(self, host: L1Host, guest_ip: str, tap: str, name: str) -> None:
        self.host = host
        self._file = f"/host{L1_SCRATCH}/{name}.jsonl"
        argv = [sys.executable, "-m", "harness.traffic.capture_main", "--guest-ip", guest_ip,
                "--port", f"{tap}={STANDBY}"]
        started = host.check(f"chroot /host {shlex.join(argv)} > {self._file} 2> {self._file}.err < /dev/null "
                             "& echo $!", "starting the path capture")
        self.pid = int(started.split()[-1])
        self._seqs: set[int] | None = None

    def ready(self) -> bool:
        return self.host.run(f"grep -q '\"ready\"' {self._file}").rc == 0

    def errors(self) -> str:
        """What the capture printed on stderr (why it did not start, if it did not)."""
        return self.host.run(f"tail -c 1000 {self._file}.err").output.strip()

    def request_stop(self) -> None:
        if self._seqs is None:
            self.host.run(f"kill -TERM {self.pid} 2>/dev/null; true")

    def standby_seqs(self) -> set[int]:
        """The sequence numbers of the replies seen on the standby (stops the capture)."""
        if self._seqs is None:
            self.request_stop()
            self.host.run(f"for i in $(seq 100); do kill -0 {self.pid} 2>/dev/null || break; sleep 0.1; done")
            # Only the numbers come back over the agent: a thousand replies a second add up.
            # sed's status, not sort's: a file gone (its L1 rebooted) is an error, not its message as numbers.
            seqs = self.host.check(f"sed -n 's/^{{\"p\": \\([0-9]*\\),.*/\\1/p' {self._file} > {self._file}.seqs "
                                   f"&& sort -un {self._file}.seqs", "reading the path capture", timeout=60.0)
            self._seqs = {int(seq) for seq in seqs.split()}
        return self._seqs



@dataclass(eq=False)  # identity semantics: beds are tracked in a set for atexit cleanup
class NestedBed(RemoteBedCommon):
    """A failover bed on the nested topology: two L1s, the L2 guest on one of them.

    :meth:`teardown` removes all of it (idempotent), the L1s' VFs included.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset({HOTPLUG_STYLE, DEGRADED_DESTINATION, SECOND_PAIR})

    config: RunConfig
    image: GuestImage
    accel: Accel  # L1's; L2's is probed inside L1 (l2_accel)
    tag: str
    run_dir: Path
    artifacts_dir: Path
    addressing: Addressing = field(default_factory=Addressing)
    hotplug: Literal["acpi", "native"] = "acpi"
    paused: bool = False
    pairs: Literal[1, 2] = 1
    network: TestNetwork = field(init=False)
    hosts: list[L1Host] = field(default_factory=list, init=False)
    vms: list[VM] = field(default_factory=list, init=False)
    source: VM = field(init=False)
    guest: Guest = field(init=False)
    boot_s: float | None = field(default=None, init=False)
    l1_boot_s: float | None = field(default=None, init=False)
    l2_accel: Accel = field(default="tcg", init=False)
    l2_accel_reason: str = field(default="", init=False)
    guest_kernel: str | None = field(default=None, init=False)  # L2's kernel release; None: not known
    _vfs: dict[str, tuple[VirtualFunction, ...]] = field(default_factory=dict, init=False)  # per L1, a VF per pair
    _macs_cleared: set[str] = field(default_factory=set, init=False)  # the L1s whose VFs' MACs are cleared
    _host_of: dict[str, L1Host] = field(default_factory=dict, init=False)
    _carriers: dict[str, list[Carrier]] = field(default_factory=dict, init=False)  # per L2: its relays
    _dest_count: int = field(default=0, init=False)
    # Per L1: its clock's (offset, uncertainty) against the harness's, in seconds.
    _clock_offsets: dict[str, tuple[float, float]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.network = TestNetwork(self.tag, self.addressing)

    def build(self) -> NestedBed:
        """Boot both L1s, give each a VF with the failover MAC, and boot the guest on the first."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            self.network.create()
            l1_image = ImageBuilder(self.config.cache_dir, L1_RECIPE_DIR).get()
            started = time.monotonic()
            with progress.step(f"bed {self.tag}: booting two L1 hypervisors ({self.accel})"):
                for i, name in enumerate(L1_NAMES):  # both boot at once, then are waited for
                    spec = l1_spec(name, self.config.qemu_binary, self.accel, l1_image,
                                   pf_mac=f"52:54:00:aa:00:{i + 1:02x}", mgmt_mac=f"52:54:00:ab:00:{i + 1:02x}",
                                   mgmt_addr=f"{self._mgmt_ip(i)}/{MGMT_PREFIX_LEN}")
                    self.hosts.append(start_l1(spec, self.network, self.run_dir, self.artifacts_dir))
                address_mgmt_bridge(self.network)  # the L1s' taps created it
                for host in self.hosts:
                    host.wait_ready()
            self.l1_boot_s = time.monotonic() - started
            for i, host in enumerate(self.hosts):
                self._clock_offsets[host.name] = l1_clock_offset(self.network, self._mgmt_ip(i))
            with progress.step(f"bed {self.tag}: a VF per failover pair in each L1, bound to vfio-pci"):
                for host in self.hosts:
                    self._vfs[host.name] = self._prepare(host)
            first = self.hosts[0]
            kernel, modules, self.guest_kernel = failover_guest_kernel(self.config, self.image)
            spec = l2_spec("src", self.config.qemu_binary, self.image, self.addressing, self._vfs[first.name],
                           kernel=kernel, modules=modules, memory_mib=self.config.guest_memory_mib,
                           paused=self.paused, extra_args=NATIVE_HOTPLUG_ARGS if self.hotplug == "native" else ())
            with progress.step(f"bed {self.tag}: can the guest use KVM inside L1?") as step:
                self.l2_accel, self.l2_accel_reason = choose_l2_accel(
                    self.config.nested_l2_accel, partial(l2_accel, first, self.config.qemu_binary, spec.kernel))
                step.result = self.l2_accel
            self._boot_source(partial(self._launch, first, replace(spec, accel=self.l2_accel)))
        except BaseException:
            self.teardown()
            raise
        return self

    @property
    def guest_accel(self) -> Accel:
        return self.l2_accel

    def boot_deadline_s(self) -> float:
        return L2_KVM_BOOT_TIMEOUT_S if self.l2_accel == "kvm" else L2_BOOT_TIMEOUT_S

    @staticmethod
    def _mgmt_ip(index: int) -> str:
        return f"{MGMT_PREFIX}.{index + 1}"

    def _prepare(self, host: L1Host) -> tuple[VirtualFunction, ...]:
        """What an SR-IOV hypervisor does before it passes VFs to a failover guest: one per pair,
        with that pair's failover MAC."""
        host.preflight()
        macs = self._failover_macs()
        vfs = tuple(host.take_vf(vf, mac) for vf, mac in zip(host.create_vfs(self.pairs), macs, strict=True))
        connect_standbys_to_pf(host, macs, pf_filter=pf_shares_mac(self.config.vf_mac_policy))
        return vfs

    def _failover_macs(self) -> list[str]:
        return [self.pair_addressing(pair).failover_mac for pair in range(1, self.pairs + 1)]

    def _set_vf_macs(self, vm: VM, *, cleared: bool) -> None:
        host = self._host_of[vm.name]
        if cleared == (host.name in self._macs_cleared):
            return
        assert host.claims is not None
        for vf, mac in zip(self._vfs[host.name], self._failover_macs(), strict=True):
            host.claims.set_mac(vf, NO_MAC if cleared else mac)
        if cleared:
            self._macs_cleared.add(host.name)
        else:
            self._macs_cleared.discard(host.name)

    def _launch(self, host: L1Host, spec: VMSpec) -> VM:
        """Start an L2 in *host*; each gets its own relay and agent ports (two may run at once)."""
        ports = len(self.vms)
        vm, relays = launch_l2(host, spec, self.network, self.run_dir, self.artifacts_dir,
                               self._mgmt_ip(self.hosts.index(host)), qmp_port=QMP_RELAY_PORT + ports,
                               control_port=L2_CONTROL_PORT + ports,
                               clock_offset_s=self._clock_offsets[host.name][0])
        self.vms.append(vm)
        self._host_of[vm.name] = host
        self._carriers[vm.name] = list(relays)
        return vm

    def facts(self) -> dict[str, object]:
        facts: dict[str, object] = {"run.l1_boot_s": self.l1_boot_s, "run.boot_s": self.boot_s,
                                    "run.l2_accel": self.l2_accel, "run.l2_accel_reason": self.l2_accel_reason,
                                    "run.guest_kernel": self.guest_kernel}
        return facts | self._clock_facts()

    def start_destination(self, *, primary: DestinationPrimary = "same") -> VM:
        """Start an incoming L2 in the other L1, with that L1's VF as its primary."""
        name = self._next_destination_name()
        (host,) = (h for h in self.hosts if h is not self._host_of[self.source.name])
        spec = with_vfs(self.source.spec.as_destination(name, self.source.spec.netdevs), self._vfs[host.name])
        destination = self._launch(host, degrade_destination(spec, primary, host=MISSING_VF_ADDRESS))
        self._set_vf_macs(destination, cleared=False)  # before QEMU plugs its VF into the guest
        return destination

    def migrate(self, destination: VM, plan: MigrationPlan = PLAIN_MIGRATION) -> MigrationResult:
        """Migrate over the management link; on success the destination becomes the source."""
        host = self._host_of[destination.name]
        return self._migrate_across(destination, f"tcp:{self._mgmt_ip(self.hosts.index(host))}:"
                                                 f"{MIGRATION_PORT + self._dest_count}", plan)

    def expected_log_lines(self) -> list[str]:
        # The VF has no netdev: nothing is hidden without a peer. L1s under TCG each calibrate their
        # TSC at boot (two of them differ by about 0.1%) and offer no TSC scaling, so QEMU warns when
        # an L2 moves from one to the other (seen once in a nested suite run): not failover's matter.
        return [L1_TSC_MISMATCH] if self.accel == "tcg" else []

    def qemu_messages(self) -> list[str]:
        """Errors and warnings of every L2 QEMU, then of the L1s' QEMUs."""
        return [line for vm in [*self.vms, *(h.vm for h in self.hosts)] for line in vm.messages()]

    def emulation_fault(self, failure: BaseException) -> str | None:
        """Under TCG, see :func:`~harness.topologies.emulated_nesting.emulated_nesting_fault`: the L2 QEMUs'
        output and the L1s' consoles."""
        if self.accel != "tcg":
            return None
        logs = self._qemu_outputs()
        for host in self.hosts:
            console = host.vm.paths.console_log
            logs[f"{host.name}'s console"] = console.read_text(errors="replace") if console.is_file() else ""
        # An L1 that reset itself quietly takes its L2 with it (seen in a repeated run: the capture's
        # file gone with l1a's /run, no panic on its console).
        return emulated_nesting_fault(failure, logs, "the L1s",
                                      self._quiet_resets([*self.vms, *(host.vm for host in self.hosts)]))

    def path_capture(self, log_path: Path, pair: int = 1) -> HypervisorPathCapture:
        guest_ip = self.pair_addressing(pair).guest_ip
        l0 = PathCapture(self.network.bridge_ns.exec_prefix(), guest_ip, {"l1?-pf": PRIMARY}, log_path)
        return HypervisorPathCapture.start(l0, [
            partial(L1StandbyCapture, host, guest_ip, standby_tap(pair), f"{log_path.stem}-{self.tag}-{pair}")
            for host in self.hosts])

    def teardown(self) -> None:
        """Stop the L2s, put the L1s' SR-IOV state back, stop the L1s, remove the network. Safe twice."""
        self._retire_all()
        for host in reversed(self.hosts):
            host.shutdown()
        self.network.delete()
        shutil.rmtree(self.run_dir, ignore_errors=True)
