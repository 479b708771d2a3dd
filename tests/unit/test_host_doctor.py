"""The host doctor's parsers and its verdict lines, on recorded output; the peer's checks on this machine."""

from __future__ import annotations

from pathlib import Path

from harness.doctor import Finding
from harness.hosts import LocalHost
from harness.lab.doctor import (
    cpu_finding,
    emulated_by_tcg,
    parse_cpu_model,
    parse_vfio_holders,
    peer_findings,
    render,
    vf_findings,
)
from harness.lab.inventory import PeerSpec
from tests.unit.test_certification import SPEC, VF1, RecordedHost


def test_vfio_holders_are_the_pids_whose_fds_point_at_the_group() -> None:
    # find /proc -maxdepth 3 -path '/proc/*/fd/*' -lname /dev/vfio/12 (one QEMU with two fds, a vanished pid).
    found = ("/proc/1234/fd/17\n/proc/1234/fd/18\nfind: '/proc/999/fd': No such file or directory\n"
             "/proc/77/fd/3\n")
    assert parse_vfio_holders(found) == [77, 1234]
    assert parse_vfio_holders("") == []


def test_the_verdict_counts_failures_across_hosts() -> None:
    findings = {"src": [Finding("iommu", True, "12 IOMMU groups")],
                "dst": [Finding("vf 0000:3b:02.0", False, "bound to ixgbevf: the host uses it", "unbind it"),
                        Finding("kvm", None, "information")]}
    lines = render(findings, Path("lab.toml"))
    assert lines[0] == "== src (lab.toml)" and "== dst (lab.toml)" in lines
    assert "[FAIL] vf 0000:3b:02.0: bound to ixgbevf: the host uses it\n         fix: unbind it" in lines
    assert lines[-1] == "\n1 problem(s)"
    assert render({"src": findings["src"]}, Path("lab.toml"))[-1] == "\nevery host can run the host topology"


def test_the_peers_host_is_checked_for_what_the_peer_runs_there() -> None:
    """On this machine (its lo, its python3 and iperf3, which `make setup` installs), then a namespace
    that does not exist: named, with the fix."""
    here = LocalHost("local")
    fit = peer_findings(here, PeerSpec(host="local", interface="lo", address="198.18.0.1/24"))
    assert [(f.area, f.ok) for f in fit] == [("peer interface", True), ("peer python3", True), ("peer iperf3", True)]
    (missing,) = peer_findings(here, PeerSpec(host="local", namespace="fohx-no-such-ns", interface="lo",
                                              address="198.18.0.1/24"))
    assert missing.ok is False and "no namespace fohx-no-such-ns" in missing.render(), missing.render()
    assert "ip netns add fohx-no-such-ns" in missing.render()
    no_interface = peer_findings(here, PeerSpec(host="local", interface="fohx-none0", address="198.18.0.1/24"))[0]
    assert no_interface.ok is False and "no fohx-none0 in the root namespace" in no_interface.render()


def test_a_host_under_tcg_is_told_from_one_on_hardware_by_its_cpu() -> None:
    # /proc/cpuinfo of an L1 (QEMU 10.0 'max' under TCG) and of a lab server.
    tcg = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: QEMU TCG CPU version 2.5+\nflags\t\t: fpu\n"
    real = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\nmodel name\t: ignored\n"
    assert parse_cpu_model(tcg) == "QEMU TCG CPU version 2.5+" and emulated_by_tcg(parse_cpu_model(tcg))
    assert parse_cpu_model(real) == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert not emulated_by_tcg(parse_cpu_model(real)) and parse_cpu_model("processor\t: 0\n") == "unknown"
    assert cpu_finding(parse_cpu_model(real)).render() == "[info] cpu: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert "an emulated hypervisor (a VM under TCG)" in cpu_finding(parse_cpu_model(tcg)).render()


def test_a_beds_doctor_checks_only_its_pairs_vfs() -> None:
    """Another worker's pair may hold the host's other VFs: they are not the bed's problem."""
    host = RecordedHost("src", {})
    (only,) = vf_findings(host, SPEC, {}, "", vfs=[VF1])
    assert only.area == f"vf {VF1}" and "hosts.src.vfs[1]: take an address" in only.render()
    assert len(vf_findings(host, SPEC, {}, "")) == 2  # the doctor command: every VF of the inventory
