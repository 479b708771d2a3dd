"""The lab hosts' tools against two L1 hypervisors standing in for lab hosts: the doctor, the host
topology's run of a case, and the certification record.

Each L1 runs the host's own sshd (from its read-only share of the host's root)
on its management address, and its emulated igb's VFs are the "real" VFs; its
bridge ``br0`` holds the PF, as a lab host's bridge holds its uplink. The
harness reaches them over SSH from the test's bridge namespace, as a harness
in a lab reaches its hosts over the management network. The doctor: a fit lab
passes; a wrong host key, a wrong VF address, a VF already in use and an
unreachable host each fail with the fix, and nothing changes on any host. The
host topology: a migration case passes over SSH, the record of that run says
certified, and both hosts are left as they were.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import netns
from harness.accel import AccelChoice
from harness.config import RunConfig
from harness.doctor import Finding
from harness.host_doctor import diagnose_inventory
from harness.hosts import netns_socket_factory
from harness.hypervisor import L1Host, l1_spec, start_l1
from harness.image import L1_RECIPE_DIR, ImageBuilder
from harness.inventory import Inventory, parse_inventory
from harness.topologies.nested import (
    L1_BRIDGE,
    MGMT_PREFIX,
    MGMT_PREFIX_LEN,
    address_mgmt_bridge,
    connect_standbys_to_pf,
)
from harness.vf_claims import VirtualFunction
from tests.e2e.test_ssh_hosts import PRIVSEP_DIR, SSHD, SSHD_CONFIG, keygen

NAMES = ("l1a", "l1b")
REPO = Path(__file__).parents[2]
NESTED_PROFILE = REPO / "profiles" / "nested-tcg.toml"
SSH_PORT = 22
UNREACHABLE_IP = f"{MGMT_PREFIX}.9"  # on the management link, no L1 has it

pytestmark = pytest.mark.skipif(not SSHD.exists(), reason=f"no {SSHD}: 'make setup' installs openssh-server")


@dataclass
class Lab:
    """Two L1s with sshd, two VFs each bound to vfio-pci; the second VF of l1b held by a process."""

    network: netns.TestNetwork
    hosts: dict[str, L1Host]
    vfs: dict[str, list[VirtualFunction]]
    keys: Path
    holder_pid: int

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


def _start_sshd(host: L1Host, keys: Path, ip: str) -> None:
    """The host's sshd inside L1 (chroot /host), its config and keys read from the host's /tmp share."""
    config = keys / f"sshd_config.{host.name}"
    config.write_text(SSHD_CONFIG.format(ip=ip, port=SSH_PORT, dir=keys)
                      .replace(f"PidFile {keys}/sshd.pid", "PidFile /run/fohx/sshd.pid"))
    host.check(f"mkdir -p /host{PRIVSEP_DIR} && chroot /host {SSHD} -f {config} -E /run/fohx/sshd.log",
               "starting sshd")


@pytest.fixture(scope="module")
def lab(harness_config: RunConfig, accel: AccelChoice, host_ready: None,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("hostlab")
    keys = tmp / "keys"
    keys.mkdir()
    host_pub = keygen(keys / "host_key")
    (keys / "authorized_keys").write_text(keygen(keys / "client_key") + "\n")
    (keys / "known_hosts").write_text("".join(f"{MGMT_PREFIX}.{i + 1} {host_pub}\n" for i in range(len(NAMES))))
    network = netns.TestNetwork(f"hd-{os.getpid() % 10000}").create()
    hosts: dict[str, L1Host] = {}
    try:
        image = ImageBuilder(harness_config.cache_dir, L1_RECIPE_DIR).get()
        for i, name in enumerate(NAMES):
            spec = l1_spec(name, harness_config.qemu_binary, accel.accel, image, pf_mac=f"52:54:00:aa:00:{i + 1:02x}",
                           mgmt_mac=f"52:54:00:ab:00:{i + 1:02x}",
                           mgmt_addr=f"{MGMT_PREFIX}.{i + 1}/{MGMT_PREFIX_LEN}")
            hosts[name] = start_l1(spec, network, tmp / "run", tmp / "artifacts")
        address_mgmt_bridge(network)
        vfs = {}
        for i, (name, host) in enumerate(hosts.items()):
            host.wait_ready()
            host.preflight()
            vfs[name] = host.create_vfs(2)
            for vf in vfs[name]:
                host.take_vf(vf)
            _start_sshd(host, keys, f"{MGMT_PREFIX}.{i + 1}")
            connect_standbys_to_pf(host, [])  # the lab's bridge, br0: the PF is its uplink
        # A VM's QEMU would hold the group open; a shell's redirection does the same.
        group = hosts["l1b"].check(f"basename $(readlink /sys/bus/pci/devices/{vfs['l1b'][1].address}/iommu_group)",
                                   "the VF's IOMMU group").strip()
        holder = int(hosts["l1b"].check(f"sleep 3600 < /dev/vfio/{group} > /dev/null 2>&1 & echo $!",
                                        "holding the VF").split()[-1])
        yield Lab(network, hosts, vfs, keys, holder)
    finally:
        for host in hosts.values():
            host.shutdown()
        network.delete()


def _failures(findings: dict[str, list[Finding]]) -> dict[str, list[str]]:
    return {name: [f.render() for f in fs if f.ok is False] for name, fs in findings.items()}


def test_a_fit_lab_passes_and_is_left_as_it_was(lab: Lab) -> None:
    before = lab.state()
    findings = lab.diagnose(lab.inventory())
    assert _failures(findings) == {"l1a": [], "l1b": []}
    rendered = {name: "\n".join(f.render() for f in fs) for name, fs in findings.items()}
    for name in NAMES:
        assert f"[ok  ] vf {lab.vfs[name][0].address}: IOMMU group" in rendered[name], rendered[name]
        assert "[ok  ] qemu failover" in rendered[name] and "[ok  ] iommu" in rendered[name], rendered[name]
        assert "spoof checking" in rendered[name], rendered[name]  # the PF's view of the VF is reported
    assert lab.state() == before


def _inventory_file(lab: Lab, path: Path, *, for_runs: bool = False, vfs: dict[str, str] | None = None) -> Path:
    """The lab's inventory as a user writes it (each host's first VF, unless *vfs* names another); *for_runs*:
    with what the host topology needs too (the standby bridge, the peer on this machine) and the nested
    profile's limits."""
    vf_of = {name: lab.vfs[name][0].address for name in NAMES} | (vfs or {})
    peer = (['host = "local"', f'namespace = "{lab.network.peer_ns.name}"',
             f'interface = "{netns.TestNetwork.PEER_IF}"'] if for_runs else ['host = "l1a"', 'interface = "mgmt0"'])
    limits = tomllib.loads(NESTED_PROFILE.read_text())["thresholds"] if for_runs else {}
    path.write_text("\n".join([
        'failover_macs = ["52:54:00:fa:00:01"]',
        *(line for i, name in enumerate(NAMES) for line in (
            f"[hosts.{name}]", f'address = "{MGMT_PREFIX}.{i + 1}"', f'key = "{lab.keys / "client_key"}"',
            f'known_hosts = "{lab.keys / "known_hosts"}"', f'pf = "{lab.hosts[name].pf_ifname}"',
            f'vfs = ["{vf_of[name]}"]', f'mgmt_address = "{MGMT_PREFIX}.{i + 1}"',
            *([f'standby_bridge = "{L1_BRIDGE}"'] if for_runs else []))),
        "[peer]", *peer, 'address = "198.18.0.1/24"',
        *(["[thresholds]", *(f"{key} = {value}" for key, value in limits.items())] if for_runs else []), ""]))
    return path


def _run_cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """``failover-harness`` as a user runs it: on a machine of the management network (the test's bridge ns)."""
    cli = Path(sys.executable).parent / "failover-harness"
    return subprocess.run([*lab.network.bridge_ns.exec_prefix(), str(cli), *args],
                          capture_output=True, text=True, timeout=300)


def test_the_command_line_doctor_reaches_the_lab_from_its_network(lab: Lab, tmp_path: Path) -> None:
    done = _run_cli(lab, "doctor", "--inventory", str(_inventory_file(lab, tmp_path / "lab.toml")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every host can run the host topology" in done.stdout


# What QEMU's igb presents: an Intel 82576 PF and its VFs.
IGB_PF_IDS = {"vendor": "8086", "device": "10c9"}
IGB_VF_IDS = {"vendor": "8086", "device": "10ca"}


def test_certify_records_what_each_lab_host_is_and_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    """The record of a (recorded) run with the facts read from both lab hosts over SSH: NIC IDs and
    driver from the PF, the VF's IDs and its vfio-pci binding, kernel, QEMU. Not certified: the
    results are not from the host topology."""
    before = lab.state()
    out = tmp_path / "record"
    done = _run_cli(lab, "certify", "--results", str(Path(__file__).parents[1] / "data" / "results-small.json"),
                    "--inventory", str(_inventory_file(lab, tmp_path / "lab.toml")), "--out", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("NOT CERTIFIED"), done.stdout
    record = json.loads((out / "certification.json").read_text())
    assert [h["name"] for h in record["hosts"]] == list(NAMES)
    kernel = lab.hosts["l1a"].check("uname -r", "L1's kernel release").strip()
    for host in record["hosts"]:
        assert host["problems"] == [], host
        assert host["kernel"] == kernel and host["qemu"].startswith("QEMU emulator version"), host
        assert host["pf"]["ids"] | IGB_PF_IDS == host["pf"]["ids"], host["pf"]
        assert host["pf"]["ethtool"]["driver"] == "igb", host["pf"]
        (vf,) = host["vfs"]
        assert vf["address"] == lab.vfs[host["name"]][0].address and vf["host_driver"] == "vfio-pci", vf
        assert vf["ids"] | IGB_VF_IDS == vf["ids"], vf
    assert record["topology"] == "flat" and "whose NICs QEMU emulates" in record["reasons"][0], record["reasons"]
    assert "8086" in (out / "certification.html").read_text()
    assert lab.state() == before


@pytest.mark.parametrize(("host", "change", "message"), [
    ("l1a", {"vfs": ["0000:00:1f.6"]}, r"\[FAIL\] vf 0000:00:1f.6: not a VF of \w+ on l1a \(its VFs: 0000:"),
    ("l1b", "in-use", r"\[FAIL\] vf \S+: in use: process\(es\) \[{pid}\] hold /dev/vfio/\d+\n\s+fix: stop the VM"),
    ("l1a", "wrong-key", r"\[FAIL\] connection: host l1a \(\S+:22\): HOST KEY CHANGED: it offered ssh-ed25519 "
                         r"SHA256:\S+, but .* has ssh-ed25519 SHA256:\S+ .*Fix, .*ssh-keyscan -p 22 "),
    ("l1b", {"address": UNREACHABLE_IP}, r"\[FAIL\] connection: host l1b \(\S+:22\): (no answer within|cannot "
                                         r"connect)"),
], ids=["wrong-vf-address", "vf-in-use", "wrong-host-key", "unreachable-host"])
def test_an_unfit_host_is_named_with_the_fix_and_nothing_changes(lab: Lab, tmp_path: Path, host: str,
                                                                 change: dict[str, Any] | str, message: str) -> None:
    if change == "in-use":
        change = {"vfs": [lab.vfs["l1b"][1].address]}
    elif change == "wrong-key":
        other = tmp_path / "known_hosts"
        other.write_text(f"{MGMT_PREFIX}.1 {keygen(tmp_path / 'stranger')}\n")
        change = {"known_hosts": str(other)}
    assert isinstance(change, dict)
    before = lab.state()
    failures = _failures(lab.diagnose(lab.inventory(**{host: change})))
    other_host = next(name for name in NAMES if name != host)
    assert failures[other_host] == []
    assert len(failures[host]) == 1, failures[host]
    assert re.search(message.format(pid=lab.holder_pid), failures[host][0], re.DOTALL), failures[host]
    assert lab.state() == before


def _leftovers(lab: Lab) -> dict[str, str]:
    """What a bed could leave on a lab host: taps, scratch files, QEMUs, captures."""
    return {name: host.run("ls /sys/class/net | grep fohx; ls -d /host/run/fohx/fohx* 2>/dev/null; "
                           "for p in /proc/[0-9]*; do readlink $p/exe; done | grep -E 'qemu|tcpdump'; "
                           "true").output.strip() for name, host in lab.hosts.items()}


def _run_probe_case(lab: Lab, inventory: Path, reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The probe migration case on the host topology, as a lab user runs it from the management network
    (its output, with the progress lines, kept in *reports*)."""
    reports.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*lab.network.bridge_ns.exec_prefix(), sys.executable, "-m", "pytest", "testcases",
                           "--topology", "host", "--inventory", str(inventory), "--probe-rate", "100",
                           "-k", "test_migration_with_failover_under_probes and acpi", "--progress",
                           "--results-json", str(reports / "results.json"), "--artifacts-dir",
                           str(reports / "artifacts"), "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    (reports / "pytest.out").write_text(done.stdout + done.stderr)
    return done


def test_a_host_the_doctor_refuses_is_not_touched(lab: Lab, tmp_path: Path) -> None:
    """l1b's VF is held by another process: the bed refuses l1b with the doctor's fix before it changes
    anything on either host (an error under --require-resources)."""
    before = lab.state()
    inventory = _inventory_file(lab, tmp_path / "lab.toml", for_runs=True, vfs={"l1b": lab.vfs["l1b"][1].address})
    done = _run_probe_case(lab, inventory, tmp_path / "reports", "--require-resources")
    assert done.returncode == 1, done.stdout[-3000:]
    assert re.search(r"lab host l1b is not ready: \[FAIL\] vf \S+: in use: process\(es\) \[\d+\]", done.stdout)
    assert _leftovers(lab) == {"l1a": "", "l1b": ""}
    assert lab.state() == before


def test_a_case_runs_on_the_lab_hosts_over_ssh_and_its_record_certifies(lab: Lab, tmp_path: Path) -> None:
    """``pytest testcases --topology host --inventory lab.toml``, run from the management network: the
    guest boots on l1a with its VF, migrates to l1b over the management link, fails back to l1b's VF;
    the probes show both paths. ``certify`` on that run says certified. Both hosts end as they began."""
    before = lab.state()
    inventory = _inventory_file(lab, tmp_path / "lab.toml", for_runs=True)
    reports = tmp_path / "reports"
    done = _run_probe_case(lab, inventory, reports)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    results = json.loads((reports / "results.json").read_text())
    (case,) = results["tests"]
    assert case["outcome"] == "passed", case
    metrics, run = case["metrics"], case["run"]
    assert metrics["replies_on_standby"] > 0 and metrics["replies_on_primary"] > 0, metrics
    assert metrics["final_path"] == "primary", metrics
    assert run["guest_accel"] == "kvm" and run["hosts"].startswith("l1a VF "), run
    assert _leftovers(lab) == {"l1a": "", "l1b": ""}
    assert lab.state() == before
    out = tmp_path / "record"
    certified = _run_cli(lab, "certify", "--results", str(reports / "results.json"), "--inventory", str(inventory),
                         "--out", str(out))
    assert certified.returncode == 0, certified.stdout + certified.stderr
    record = json.loads((out / "certification.json").read_text())
    assert record["verdict"] == "certified" and record["topology"] == "host", record["reasons"]
