"""``failover-harness doctor --inventory lab.toml``: can each lab host run the host topology?

For every host of the inventory: the connection (host key, key, reachability),
its kernel, IOMMU, SR-IOV on the PF, each VF the harness may take (it exists,
belongs to the PF, its IOMMU group holds nothing else, its driver, whether a
process holds it through VFIO already, the PF's view of its MAC, spoof check
and trust), the QEMU under test (version, ``vfio-pci``, virtio-net's
``failover``, KVM), and on the traffic peer's host what the peer runs there.
It only reads: nothing on a host is changed. Each failure says what to do.
Parsers are pure and tested on recorded output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

from harness import capabilities
from harness.doctor import Finding, parse_device_names, parse_device_properties
from harness.errors import HarnessError
from harness.hosts import Host, LocalHost
from harness.lab.inventory import LOCAL, HostSpec, Inventory, PeerSpec
from harness.lab.ssh import DEFAULT_KNOWN_HOSTS, SocketFactory, SSHHost
from harness.sriov.sysfs import attribute, link_name
from harness.sriov.vf_state import VfState, parse_vf_states

# Drivers a VF may be bound to and still be taken by the harness (vfio-pci) or
# left alone by the host (no driver, pci-stub); any other means the host uses it.
PASSTHROUGH_DRIVERS = ("vfio-pci", "pci-stub", "")

T = TypeVar("T")


def parse_vfio_holders(find_output: str) -> list[int]:
    """Pids from ``/proc/<pid>/fd/<n>`` paths (``find /proc ... -lname /dev/vfio/<group>``). Pure."""
    return sorted({int(m) for m in re.findall(r"^/proc/(\d+)/fd/\d+$", find_output, re.MULTILINE)})


def connect(name: str, spec: HostSpec, sock_factory: SocketFactory | None = None) -> LocalHost | SSHHost:
    """The inventory host *name* as a :class:`~harness.hosts.Host` (not yet connected: SSH connects on first use)."""
    if spec.address == LOCAL:
        return LocalHost(name)
    assert spec.key is not None, "the inventory requires a key for an SSH host"
    known_hosts = DEFAULT_KNOWN_HOSTS if spec.known_hosts is None else spec.known_hosts
    return SSHHost(name, spec.address, spec.key, port=spec.port, user=spec.user, known_hosts=known_hosts,
                   host_key_check=spec.host_key_check, sock_factory=sock_factory)


def _text(host: Host, argv: list[str], input: str | None = None) -> tuple[int, str]:
    result = host.run(argv, input=input)
    return result.rc, result.output.strip()


# The model name of QEMU's 'max' CPU under TCG: such a host is a hypervisor emulated by TCG.
TCG_CPU_MODEL = "QEMU TCG CPU"


def parse_cpu_model(cpuinfo: str) -> str:
    """The first ``model name`` of ``/proc/cpuinfo`` (x86), or "unknown". Pure."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def cpu_model(host: Host) -> str:
    rc, cpuinfo = _text(host, ["cat", "/proc/cpuinfo"])
    return parse_cpu_model(cpuinfo) if rc == 0 else "unknown"


def emulated_by_tcg(model: str) -> bool:
    return model.startswith(TCG_CPU_MODEL)


def cpu_finding(model: str) -> Finding:
    return Finding("cpu", None, model + ("; an emulated hypervisor (a VM under TCG), not hardware: its timings say "
                                         "little, and a case that fails from what TCG's emulation of nesting is "
                                         "known to do runs once more" if emulated_by_tcg(model) else ""))


def kernel_findings(host: Host) -> list[Finding]:
    rc, release = _text(host, ["uname", "-r"])
    findings = [Finding("kernel", None, release if rc == 0 else f"uname -r failed: {release}")]
    rc, groups = _text(host, ["ls", "/sys/kernel/iommu_groups"])
    count = len(groups.split()) if rc == 0 else 0
    findings.append(Finding("iommu", count > 0, f"{count} IOMMU groups" if count else "no IOMMU groups",
                            "" if count else
                            "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on (or amd_iommu=on)"))
    return findings


def pf_findings(host: Host, spec: HostSpec) -> tuple[list[Finding], dict[str, int], str]:
    """The PF: present, SR-IOV capable and enabled; its VFs (address → index) and ``ip link show`` text."""
    device = f"/sys/class/net/{spec.pf}/device"
    pf_pci = link_name(host, device)
    if not pf_pci:
        return [Finding("pf", False, f"no network interface {spec.pf!r} with a PCI device",
                        f"hosts.{host.name}.pf: name the SR-IOV PF's interface (ip -br link on {host.name})")], {}, ""
    total = attribute(host, f"{device}/sriov_totalvfs")
    enabled = attribute(host, f"{device}/sriov_numvfs")
    if total is None or total == "0":
        return [Finding("pf", False, f"{spec.pf} ({pf_pci}) offers no SR-IOV VFs",
                        "a NIC (and firmware setting) with SR-IOV, and its PF driver loaded")], {}, ""
    findings = [Finding("pf", True, f"{spec.pf} ({pf_pci}), SR-IOV: {enabled} of {total} VFs enabled")]
    links = _text(host, ["ls", device])[1].split()
    vfs = {link_name(host, f"{device}/{link}"): int(link.removeprefix("virtfn"))
           for link in links if link.startswith("virtfn")}
    if not vfs:
        findings.append(Finding("sr-iov", False, f"SR-IOV is not enabled on {spec.pf} (sriov_numvfs {enabled})",
                                f"echo {len(spec.vfs)} > {device}/sriov_numvfs (on {host.name})"))
    _, shown = _text(host, ["ip", "link", "show", "dev", spec.pf])
    return findings, vfs, shown


def vf_findings(host: Host, spec: HostSpec, index_of: dict[str, int], ip_link_show: str,
                vfs: Collection[str] | None = None) -> list[Finding]:
    """Each VF the inventory lets the harness take (of those, *vfs* only if given)."""
    states = parse_vf_states(ip_link_show)
    findings = []
    for position, vf in enumerate(spec.vfs):
        if vfs is not None and vf not in vfs:
            continue
        area = f"vf {vf}"
        field = f"hosts.{host.name}.vfs[{position}]"
        if vf not in index_of:
            known = ", ".join(sorted(index_of)) or "none"
            findings.append(Finding(area, False, f"not a VF of {spec.pf} on {host.name} (its VFs: {known})",
                                    f"{field}: take an address from that list"))
            continue
        findings += _one_vf(host, vf, area, states.get(index_of[vf]))
    return findings


def _one_vf(host: Host, vf: str, area: str, state: VfState | None) -> list[Finding]:
    dev = f"/sys/bus/pci/devices/{vf}"
    group = link_name(host, f"{dev}/iommu_group")
    if not group:
        return [Finding(area, False, "in no IOMMU group", "enable the IOMMU (see iommu above)")]
    _, members = _text(host, ["ls", f"/sys/kernel/iommu_groups/{group}/devices"])
    others = [m for m in members.split() if m != vf]
    findings = []
    if others:
        findings.append(Finding(area, False, f"IOMMU group {group} also holds {', '.join(others)}: not viable alone",
                                "a NIC and slot whose VFs get their own groups (ACS), or pass the whole group"))
    driver = link_name(host, f"{dev}/driver")
    holders = parse_vfio_holders(_text(host, ["find", "/proc", "-maxdepth", "3", "-path", "/proc/*/fd/*",
                                              "-lname", f"/dev/vfio/{group}"])[1]) if driver == "vfio-pci" else []
    if holders:
        findings.append(Finding(area, False, f"in use: process(es) {holders} hold /dev/vfio/{group}",
                                "stop the VM that uses it, or give the harness another VF"))
    elif driver not in PASSTHROUGH_DRIVERS:
        findings.append(Finding(area, False, f"bound to {driver}: the host uses it",
                                f"free it for the harness: echo {vf} > /sys/bus/pci/drivers/{driver}/unbind "
                                "(the harness then binds it to vfio-pci), or give the harness another VF"))
    elif not others:
        findings.append(Finding(area, True, f"IOMMU group {group}, driver {driver or 'none'}: the harness can "
                                "bind it to vfio-pci"))
    if state is None:
        findings.append(Finding(area, False, "the PF does not report this VF (ip link show): its MAC cannot be "
                                "set from the PF", "a PF driver that implements ndo_get/set_vf_config"))
    else:
        flags = ", ".join(f"{name} {'on' if on else 'off'}" for name, on in
                          (("spoof checking", state.spoof_check), ("trust", state.trust)) if on is not None)
        findings.append(Finding(area, None, f"VF {state.index}: MAC {state.mac}" + (f", {flags}" if flags else "")))
    return findings


def qemu_findings(host: Host, spec: HostSpec) -> list[Finding]:
    """The QEMU under test on *host*: version, the devices failover with a VF needs, KVM."""
    binary = spec.qemu_binary
    rc, version_text = _text(host, [binary, "--version"])
    version = capabilities.parse_qemu_version(version_text) if rc == 0 else None
    if version is None:
        return [Finding("qemu", False, f"{binary} does not run: {version_text[:200]}",
                        f"hosts.{host.name}.qemu_binary: the QEMU under test (>= 8.0) on {host.name}")]
    shown = ".".join(map(str, version))
    findings = [Finding("qemu", version[:2] >= capabilities.MIN_QEMU, f"{binary} {shown}",
                        "" if version[:2] >= capabilities.MIN_QEMU else "QEMU >= 8.0")]
    devices = parse_device_names(_text(host, [binary, "-device", "help"])[1])
    findings.append(Finding("qemu vfio-pci", "vfio-pci" in devices,
                            "present" if "vfio-pci" in devices else "absent", "" if "vfio-pci" in devices
                            else "a QEMU built with VFIO (--enable-vfio)"))
    failover = "failover" in parse_device_properties(_text(host, [binary, "-device", "virtio-net-pci,help"])[1])
    findings.append(Finding("qemu failover", failover, "virtio-net-pci has 'failover'" if failover else "no "
                            "'failover' property on virtio-net-pci", "" if failover else "QEMU >= 4.2"))
    # QEMU initialises KVM and quits at once (no guest runs: a remote host has no guest kernel for us).
    rc, kvm = _text(host, [binary, "-accel", "kvm", "-M", "none", "-nodefaults", "-no-user-config",
                           "-display", "none", "-monitor", "stdio"], input="quit\n")
    findings.append(Finding("kvm", rc == 0, "QEMU initialises KVM" if rc == 0 else f"KVM unusable: {kvm[-200:]}",
                            "" if rc == 0 else "enable VT-x/AMD-V and load kvm_intel or kvm_amd"))
    return findings


def standby_findings(host: Host, spec: HostSpec) -> list[Finding]:
    """What the host topology needs for the virtio-net standby: its bridge, and tcpdump to see its replies."""
    findings = []
    if spec.standby_bridge is None:
        findings.append(Finding("standby bridge", None, "none named: the host topology needs one",
                                f"hosts.{host.name}.standby_bridge: the bridge that reaches the VFs' network"))
    else:
        bridge = host.run(["test", "-d", f"/sys/class/net/{spec.standby_bridge}/bridge"]).rc == 0
        findings.append(Finding("standby bridge", bridge, f"{spec.standby_bridge} is a bridge" if bridge else
                                f"no bridge {spec.standby_bridge}", "" if bridge else
                                f"create it with the PF's uplink as a port, or name another in "
                                f"hosts.{host.name}.standby_bridge"))
    tcpdump = host.run(["tcpdump", "--version"]).rc == 0
    findings.append(Finding("tcpdump", tcpdump, "present" if tcpdump else "absent: the standby's replies cannot "
                            "be told apart", "" if tcpdump else "apt install tcpdump"))
    return findings


# The oldest python3 the peer's programs (harness.traffic, run by harness.lab.remote_command) run on.
PEER_PYTHON = (3, 9)


def peer_findings(host: Host, peer: PeerSpec) -> list[Finding]:
    """What the traffic peer needs on its lab host: its namespace and interface, python3 for the probes
    and the capture, iperf3 for the throughput cases."""
    findings = []
    netns = ["ip", "netns", "exec", peer.namespace] if peer.namespace else []
    where = f"namespace {peer.namespace}" if peer.namespace else "the root namespace"
    if peer.namespace and host.run([*netns, "true"]).rc != 0:
        return [Finding("peer namespace", False, f"no namespace {peer.namespace} on {host.name}",
                        f"create it (ip netns add {peer.namespace}) with the peer's interface, or correct "
                        "peer.namespace")]
    shown = host.run([*netns, "ip", "link", "show", "dev", peer.interface]).rc == 0
    findings.append(Finding("peer interface", shown, f"{peer.interface} in {where}" if shown else
                            f"no {peer.interface} in {where}", "" if shown else
                            "give the peer an interface on the VFs' network there, or correct peer.interface"))
    rc, version = _text(host, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    fit = rc == 0 and tuple(int(part) for part in version.split(".")) >= PEER_PYTHON
    findings.append(Finding("peer python3", fit, version if rc == 0 else "absent", "" if fit else
                            f"apt install python3 (>= {'.'.join(map(str, PEER_PYTHON))}): the probes run on it"))
    iperf = host.run(["iperf3", "--version"]).rc == 0
    findings.append(Finding("peer iperf3", iperf, "present" if iperf else "absent", "" if iperf else
                            "apt install iperf3"))
    return findings


def diagnose_host(host: Host, spec: HostSpec, peer: PeerSpec | None = None,
                  vfs: Collection[str] | None = None) -> list[Finding]:
    """Every finding for one inventory host (and the traffic *peer*'s, if it lives there), of its VFs only
    *vfs* if given (a bed's pair: another pair's VF may be in use by another worker); a connection failure
    is the only one then."""
    try:
        findings = [Finding("connection", True, f"{host.name} is {_text(host, ['uname', '-n'])[1]}")]
        findings += [cpu_finding(cpu_model(host)), *kernel_findings(host)]
        pf, index_of, shown = pf_findings(host, spec)
        findings += pf
        if index_of:
            findings += vf_findings(host, spec, index_of, shown, vfs)
        findings += qemu_findings(host, spec)
        findings += standby_findings(host, spec)
        if peer is not None:
            findings += peer_findings(host, peer)
    except HarnessError as e:
        return [Finding("connection", False, str(e))]
    return findings


def on_each_host(inventory: Inventory, read: Callable[[Host, HostSpec], T],
                 sock_factory: Callable[[str], SocketFactory | None] = lambda _: None) -> dict[str, T]:
    """*read* on every inventory host, connected for it and closed after; *sock_factory* gives each
    host's socket maker (e.g. in a namespace). What the doctor and the certification record share."""
    out = {}
    for name, spec in inventory.hosts.items():
        host = connect(name, spec, sock_factory(name))
        try:
            out[name] = read(host, spec)
        finally:
            host.close()
    return out


def diagnose_inventory(inventory: Inventory,
                       sock_factory: Callable[[str], SocketFactory | None] = lambda _: None,
                       ) -> dict[str, list[Finding]]:
    """Findings per inventory host; *sock_factory* gives each host's socket maker (e.g. in a namespace)."""
    peer = inventory.peer
    return on_each_host(inventory, lambda host, spec: diagnose_host(host, spec, peer if host.name == peer.host
                                                                     else None), sock_factory)


def render(findings: dict[str, list[Finding]], source: Path) -> list[str]:
    lines = []
    for name, host_findings in findings.items():
        lines.append(f"== {name} ({source})")
        lines += [finding.render() for finding in host_findings]
    failed = sum(1 for fs in findings.values() for f in fs if f.ok is False)
    lines.append(f"\n{failed} problem(s)" if failed else "\nevery host can run the host topology")
    return lines
