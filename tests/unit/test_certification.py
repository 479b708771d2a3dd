"""The certification record: its parsers, a host's facts read through a host of recorded answers, the verdict,
the diffable JSON, the escaped HTML and the command's bad-input errors.

The command outputs below are the formats each tool prints (ethtool's ``-i`` lines for igb as QEMU emulates
it in the nested topology's L1s, ixgbe and an mlx5 with Mellanox's out-of-tree driver; sysfs ID files; QEMU's
``--version``), written out here, not captured on the machines named.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from harness import cli, progress
from harness.config import Thresholds
from harness.errors import ConfigError, HostUnreachable
from harness.guest import CommandResult
from harness.hosts import COMMAND_TIMEOUT_S
from harness.lab.certification import (
    CERTIFIED,
    NOT_CERTIFIED,
    CertificationRecord,
    EthtoolInfo,
    HostFacts,
    PciIds,
    PfFacts,
    VfFacts,
    collect_host_facts,
    load_results,
    parse_ethtool_info,
    parse_kernel_release,
    parse_pci_id,
    parse_qemu_version_line,
    parse_results,
    write_record,
)
from harness.lab.inventory import HostSpec, Pair, parse_inventory
from tests.conftest import DATA
from tests.unit.test_inventory import with_pairs

ETHTOOL_IGB = """\
driver: igb
version: 6.1.0-37-amd64
firmware-version: 0.0.0
expansion-rom-version: 
bus-info: 0000:01:00.0
supports-statistics: yes
supports-test: yes
supports-eeprom-access: yes
supports-register-dump: yes
supports-priv-flags: yes
"""  # noqa: W291 (ethtool prints an empty value after its space)

ETHTOOL_IXGBE = """\
driver: ixgbe
version: 6.8.0-45-generic
firmware-version: 0x800003df, 1.2074.0
expansion-rom-version: 
bus-info: 0000:3b:00.0
supports-statistics: yes
supports-test: yes
supports-eeprom-access: yes
supports-register-dump: yes
supports-priv-flags: yes
"""  # noqa: W291

ETHTOOL_MLX5 = """\
driver: mlx5_core
version: 24.01-0.3.3
firmware-version: 16.35.2000 (MT_0000000080)
expansion-rom-version: 
bus-info: 0000:af:00.0
supports-statistics: yes
supports-test: yes
supports-eeprom-access: no
supports-register-dump: no
supports-priv-flags: yes
"""  # noqa: W291

QEMU_VERSION = ("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1)\n"
                "Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n")
PF, VF0, VF1 = "0000:01:00.0", "0000:01:10.0", "0000:01:10.2"
IGB_PF_IDS = PciIds("8086", "10c9", "1af4", "1100")  # QEMU's igb: an 82576; QEMU's default subsystem
IGB_VF_IDS = PciIds("8086", "10ca", "1af4", "1100")


def _sysfs_ids(address: str, ids: PciIds) -> dict[tuple[str, ...], CommandResult]:
    return {("cat", "--", f"/sys/bus/pci/devices/{address}/{name}"): CommandResult(0, f"0x{value}\n")
            for name, value in zip(("vendor", "device", "subsystem_vendor", "subsystem_device"),
                                   (ids.vendor, ids.device, ids.subsystem_vendor, ids.subsystem_device), strict=True)}


def igb_l1_answers() -> dict[tuple[str, ...], CommandResult]:
    """What a nested topology's L1 answers: an emulated igb PF eth1, two VFs bound to vfio-pci."""
    return {
        ("uname", "-r"): CommandResult(0, "6.1.0-37-amd64\n"),
        ("qemu-system-x86_64", "--version"): CommandResult(0, QEMU_VERSION),
        ("readlink", "-e", "--", "/sys/class/net/eth1/device"):
            CommandResult(0, f"/sys/devices/pci0000:00/0000:00:02.0/{PF}\n"),
        ("ethtool", "-i", "eth1"): CommandResult(0, ETHTOOL_IGB),
        **_sysfs_ids(PF, IGB_PF_IDS), **_sysfs_ids(VF0, IGB_VF_IDS), **_sysfs_ids(VF1, IGB_VF_IDS),
        ("readlink", "-e", "--", f"/sys/bus/pci/devices/{VF0}/driver"):
            CommandResult(0, "/sys/bus/pci/drivers/vfio-pci\n"),
        ("readlink", "-e", "--", f"/sys/bus/pci/devices/{VF1}/driver"): CommandResult(1, ""),
    }


@dataclass
class RecordedHost:
    """A :class:`~harness.hosts.Host` answering each argv from recorded output (anything else: exit 1, as
    ``cat`` of a missing file); *down* makes every command fail as an unreachable SSH host does."""

    name: str
    answers: dict[tuple[str, ...], CommandResult]
    down: bool = False
    ran: list[list[str]] = field(default_factory=list)

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT_S, input: str | None = None) -> CommandResult:
        if self.down:
            raise HostUnreachable(f"host {self.name} (hv1.lab.example:22): no SSH session: timed out")
        self.ran.append(argv)
        return self.answers.get(tuple(argv), CommandResult(1, f"{argv[0]}: {argv[-1]}: No such file or directory"))

    def check(self, argv: list[str], what: str, timeout: float = COMMAND_TIMEOUT_S, input: str | None = None) -> str:
        raise AssertionError("the facts are read through run() only")

    def read_file(self, path: str) -> str:
        raise AssertionError("the facts are read through run() only")

    def write_file(self, path: str, text: str) -> None:
        raise AssertionError("reading facts writes nothing")

    def close(self) -> None:
        pass


SPEC = HostSpec.model_validate({"address": "local", "pf": "eth1", "vfs": [VF0, VF1], "mgmt_address": "192.0.2.11"})


# -- parsers -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (ETHTOOL_IGB, EthtoolInfo("igb", "6.1.0-37-amd64", "0.0.0", "0000:01:00.0")),
    (ETHTOOL_IXGBE, EthtoolInfo("ixgbe", "6.8.0-45-generic", "0x800003df, 1.2074.0", "0000:3b:00.0")),
    (ETHTOOL_MLX5, EthtoolInfo("mlx5_core", "24.01-0.3.3", "16.35.2000 (MT_0000000080)", "0000:af:00.0")),
])
def test_ethtool_i_gives_driver_version_firmware_and_bus(text: str, expected: EthtoolInfo) -> None:
    assert parse_ethtool_info(text) == expected


def test_what_is_not_ethtool_i_output_is_refused() -> None:
    with pytest.raises(ValueError, match="no driver line"):
        parse_ethtool_info("Cannot get driver information: Operation not supported\n")


def test_sysfs_ids_kernel_release_and_qemu_version() -> None:
    assert parse_pci_id("0x10C9\n") == "10c9"
    with pytest.raises(ValueError, match="not a PCI ID"):
        parse_pci_id("cat: /sys/bus/pci/devices/x/vendor: No such file or directory")
    assert parse_kernel_release("6.1.0-37-amd64\n") == "6.1.0-37-amd64"
    with pytest.raises(ValueError, match="not a kernel release"):
        parse_kernel_release("")
    assert parse_qemu_version_line(QEMU_VERSION) == "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1)"
    with pytest.raises(ValueError, match="not QEMU's --version output"):
        parse_qemu_version_line("bash: line 1: exec: /opt/qemu/bin/qemu-system-x86_64: not found\n")


# -- a host's facts ------------------------------------------------------------------------------------------------

def test_a_hosts_facts_name_the_nic_its_drivers_and_versions() -> None:
    host = RecordedHost("src", igb_l1_answers())
    facts = collect_host_facts(host, SPEC)
    assert facts == HostFacts(
        name="src", kernel="6.1.0-37-amd64", qemu_binary="qemu-system-x86_64",
        qemu="QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1)",
        pf=PfFacts("eth1", PF, IGB_PF_IDS, EthtoolInfo("igb", "6.1.0-37-amd64", "0.0.0", PF)),
        vfs=(VfFacts(VF0, IGB_VF_IDS, "vfio-pci"), VfFacts(VF1, IGB_VF_IDS, "")),
        problems=())
    assert all(argv[0] in ("uname", "qemu-system-x86_64", "readlink", "cat", "ethtool") for argv in host.ran)


@pytest.mark.parametrize("said", ["ethtool: No such file or directory",  # LocalHost
                                  "bash: line 1: exec: ethtool: not found"])  # over SSH
def test_a_missing_ethtool_is_a_problem_with_its_fix_and_the_rest_is_still_read(said: str) -> None:
    answers = igb_l1_answers() | {("ethtool", "-i", "eth1"): CommandResult(127, said)}
    facts = collect_host_facts(RecordedHost("src", answers), SPEC)
    assert facts.problems == ("PF eth1: driver and firmware: ethtool is not installed on src (or not on its PATH). "
                              "Fix: apt install ethtool on src",)
    assert facts.pf == PfFacts("eth1", PF, IGB_PF_IDS, None)
    assert facts.kernel == "6.1.0-37-amd64" and len(facts.vfs) == 2


def test_failing_commands_and_absent_devices_are_problems_naming_what_and_why() -> None:
    answers = igb_l1_answers() | {
        ("ethtool", "-i", "eth1"): CommandResult(71, "Cannot get driver information: Operation not supported\n"),
        ("qemu-system-x86_64", "--version"): CommandResult(127, "bash: line 1: exec: qemu-system-x86_64: not found"),
    }
    del answers[("cat", "--", f"/sys/bus/pci/devices/{VF1}/vendor")]
    facts = collect_host_facts(RecordedHost("src", answers), SPEC)
    assert facts.problems == (
        "QEMU under test: qemu-system-x86_64 is not installed on src (or not on its PATH). Fix: install the QEMU "
        "under test on src, or name it in hosts.src.qemu_binary",
        "PF eth1: driver and firmware: ethtool -i eth1 exited 71: Cannot get driver information: Operation not "
        "supported",
        f"VF {VF1}: no /sys/bus/pci/devices/{VF1}/vendor on src: not a PCI function there",
    )
    assert facts.qemu is None and facts.vfs[1] == VfFacts(VF1, None, "")


def test_a_wrong_pf_name_is_a_problem_pointing_at_the_inventory_field() -> None:
    spec = SPEC.model_copy(update={"pf": "eth9"})
    facts = collect_host_facts(RecordedHost("src", igb_l1_answers()), spec)
    assert facts.pf == PfFacts("eth9", None, None, None)
    assert "PF eth9: no network interface 'eth9' with a PCI device on src. Fix: hosts.src.pf" in facts.problems[0]


def test_an_unreachable_host_gives_facts_with_that_one_problem() -> None:
    facts = collect_host_facts(RecordedHost("src", {}, down=True), SPEC)
    assert facts == HostFacts("src", None, "qemu-system-x86_64", None, None, (),
                              ("not read: host src (hv1.lab.example:22): no SSH session: timed out",))


# -- the record ----------------------------------------------------------------------------------------------------

def recorded_results() -> dict[str, Any]:
    """A real run's results.json (flat topology; one case passed after a retry, one failed its log scan)."""
    doc: dict[str, Any] = json.loads((DATA / "results-small.json").read_text())
    return doc


def host_run(*extra_tests: dict[str, Any]) -> dict[str, Any]:
    """The recorded passing case as if on the host topology (which the harness cannot run yet), plus *extra_tests*."""
    doc = recorded_results()
    doc["run"]["config"]["topology"] = "host"
    doc["exit_status"] = 0
    passed = next(t for t in doc["tests"] if t["outcome"] == "passed")
    passed["run"]["guest_kernel"] = "6.1.0-37-amd64"
    doc["tests"] = [passed, *extra_tests]
    return doc


def skipped(name: str) -> dict[str, Any]:
    return {"nodeid": f"testcases/test_pairing.py::{name}", "outcome": "skipped", "duration_s": 0.0,
            "metrics": {}, "checks": {}, "phases_s": {"setup": 0.0, "teardown": 0.0},
            "message": "Skipped: the host topology cannot provide: command-line-pairing"}


def good_host() -> HostFacts:
    return collect_host_facts(RecordedHost("src", igb_l1_answers()), SPEC)


def build(doc: dict[str, Any], hosts: list[HostFacts] | None = None,
          thresholds: dict[str, Any] | None = None, pairs: tuple[Pair, ...] = ()) -> CertificationRecord:
    results = parse_results(doc, "results.json")
    declared = results.run.config.thresholds if thresholds is None else thresholds
    return CertificationRecord.build(results, [good_host()] if hosts is None else hosts, declared,
                                     sources={"results": "reports/results.json", "inventory": "lab.toml"}, pairs=pairs)


def test_the_record_names_each_pair_and_which_cases_it_ran() -> None:
    """A two-pair run: each pair with its hosts, VFs and MAC (stable: from the inventory), the cases each ran
    under run (which worker took a case is the scheduler's)."""
    doc = host_run(skipped("test_a"))
    doc["tests"][0]["run"]["pair"] = "ba"
    doc["tests"][1]["run"] = {"pair": "ab"}
    record = build(doc, pairs=parse_inventory(with_pairs(), "lab.toml").failover_pairs)
    assert record.verdict == CERTIFIED, record.reasons
    assert record.to_dict()["pairs"] == [
        {"name": "ab", "source_host": "src", "source_vf": "0000:3b:02.0", "destination_host": "dst",
         "destination_vf": "0000:3b:02.0", "failover_mac": "52:54:00:fa:10:01"},
        {"name": "ba", "source_host": "dst", "source_vf": "0000:3b:02.1", "destination_host": "src",
         "destination_vf": "0000:3b:02.1", "failover_mac": "52:54:00:fa:10:02"}]
    assert record.run["pairs"] == {"ba": [doc["tests"][0]["nodeid"]], "ab": ["testcases/test_pairing.py::test_a"]}
    page = record.render_html()
    assert "<h2>Failover pairs</h2>" in page
    assert "<tr><td>ba</td><td>dst VF <code>0000:3b:02.1</code></td><td>src VF <code>0000:3b:02.1</code></td>" in page


def test_a_case_on_a_pair_the_inventory_does_not_define_is_not_certified() -> None:
    doc = host_run()
    doc["tests"][0]["run"]["pair"] = "zz"
    record = build(doc, pairs=parse_inventory(with_pairs(), "lab.toml").failover_pairs)
    assert record.verdict == NOT_CERTIFIED
    assert record.reasons == (f"{doc['tests'][0]['nodeid']}: ran on pair 'zz', which the inventory does not define: "
                              "certify with the inventory the run used",)


def test_a_passing_host_run_on_complete_facts_is_certified() -> None:
    record = build(host_run())
    assert record.verdict == CERTIFIED and record.reasons == ()
    assert record.counts == {"passed": 1, "failed": 0, "error": 0, "skipped": 0, "xfailed": 0}
    assert record.guest_kernel == "6.1.0-37-amd64"
    (case,) = record.cases
    assert case.facts == {"accel": "tcg"} and case.checks["logs_clean"].startswith("PASS")


def test_the_recorded_flat_run_is_not_certified_and_names_its_failed_case() -> None:
    record = build(recorded_results())
    assert record.verdict == NOT_CERTIFIED
    assert record.reasons[0].startswith("the results are from the flat topology, whose NICs QEMU emulates")
    assert record.reasons[1] == "testcases/test_migration.py::test_ping_pong_migration: failed (logs_clean FAIL)"
    assert len(record.reasons) == 2  # exit status 1 is that failure, not another reason
    assert record.counts["failed"] == 1 and record.counts["passed"] == 1


def test_no_cases_is_not_certified() -> None:
    record = build(host_run() | {"tests": []})
    assert record.verdict == NOT_CERTIFIED
    assert record.reasons == ("no case passed (0 in the results): nothing was shown to work",)
    assert record.guest_kernel.startswith("unknown: no case recorded run.guest_kernel")


def test_skipped_cases_are_counted_and_listed_with_their_reason_but_do_not_fail_it() -> None:
    record = build(host_run(skipped("test_b"), skipped("test_a")))
    assert record.verdict == CERTIFIED
    assert record.counts["skipped"] == 2
    assert [c.reason for c in record.cases if c.verdict == "skipped"] == [
        "Skipped: the host topology cannot provide: command-line-pairing"] * 2
    page = record.render_html()
    assert "<h2>Skipped cases</h2>" in page and "1 passed, 0 failed, 0 error, 2 skipped, 0 xfailed" in page


def test_only_skips_or_an_interrupted_run_is_not_certified() -> None:
    only_skips = host_run(skipped("test_a"))
    only_skips["tests"] = only_skips["tests"][1:]
    assert build(only_skips).reasons == ("no case passed (1 in the results): nothing was shown to work",)
    interrupted = host_run() | {"exit_status": 2}
    assert build(interrupted).reasons == (
        "pytest ended with exit status 2 (interrupted): the run did not finish normally",)


def test_other_thresholds_than_the_inventorys_or_incomplete_facts_are_not_certified() -> None:
    declared = Thresholds(max_gap_ms=1000).model_dump()
    reason = build(host_run(), thresholds=declared).reasons[0]
    assert reason.startswith("the run judged against other thresholds than the inventory's: ")
    assert "; max_gap_ms 4000.0 (inventory: 1000.0); " in reason
    assert "; min_dirty_sync_count not recorded (inventory: 8); " in reason
    answers = igb_l1_answers() | {("ethtool", "-i", "eth1"): CommandResult(127, "ethtool: not found")}
    incomplete = collect_host_facts(RecordedHost("dst", answers), SPEC)
    record = build(host_run(), hosts=[good_host(), incomplete])
    assert record.verdict == NOT_CERTIFIED
    assert record.reasons == (f"host dst: {incomplete.problems[0]}",)
    assert build(host_run(), hosts=[]).reasons == ("no host's facts: the record does not say what hardware it is "
                                                   "about",)


def test_the_json_is_the_same_for_the_same_run_whatever_the_order() -> None:
    doc = host_run(skipped("test_b"), skipped("test_a"))
    first = build(doc).to_json()
    assert build(copy.deepcopy(doc)).to_json() == first
    reordered = copy.deepcopy(doc)
    reordered["tests"].reverse()
    reordered["tests"][0]["metrics"] = dict(reversed(reordered["tests"][0]["metrics"].items()))
    assert build(reordered).to_json() == first
    parsed = json.loads(first)
    assert parsed["schema"] == 1 and parsed["verdict"] == CERTIFIED
    assert [c["nodeid"] for c in parsed["cases"]] == sorted(c["nodeid"] for c in parsed["cases"])
    assert first == json.dumps(parsed, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_what_changes_between_identical_runs_is_under_run_only() -> None:
    again = host_run()
    again["started"] += 3600
    again["finished"] += 3700
    case = again["tests"][0]
    case["duration_s"], case["reruns"] = 40.2, 0
    case["run"] |= {"boot_s": 12.5, "accel_reason": "KVM usable"}
    one, other = build(host_run()).to_dict(), build(again).to_dict()
    assert one["run"] != other["run"]
    del one["run"], other["run"]
    assert one == other


def test_the_html_escapes_a_hostile_node_id_and_shows_the_verdict_first() -> None:
    hostile = skipped("test_x[<script>alert('x')</script>&]")
    page = build(host_run(hostile)).render_html()
    assert "<script>" not in page
    assert "test_x[&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;]" in page
    assert page.index('class="verdict certified">CERTIFIED') < page.index("<h2>Hosts</h2>")
    assert "0.0.0" in page and "8086:10c9 (subsystem 1af4:1100)" in page and "vfio-pci" in page


def test_the_html_escapes_hostile_check_details_metrics_and_host_facts() -> None:
    doc = host_run()
    case = doc["tests"][0]
    case["outcome"] = "failed"
    case["checks"]["logs_clean"] = "FAIL <script>alert(1)</script> & more"
    case["metrics"]["final_path"] = "<script>&"
    host = replace(good_host(), name="src<script>&", problems=("<b>no</b> & none",))
    page = build(doc, hosts=[host]).render_html()
    assert "<script>" not in page and "<b>" not in page
    assert "<td>FAIL &lt;script&gt;alert(1)&lt;/script&gt; &amp; more</td>" in page
    assert "final_path = &lt;script&gt;&amp;" in page
    assert "<td>src&lt;script&gt;&amp;</td>" in page
    assert '<span class="problem">&lt;b&gt;no&lt;/b&gt; &amp; none</span>' in page


def test_the_record_is_written_as_json_and_html(tmp_path: Path) -> None:
    record = build(host_run())
    json_path, html_path = write_record(record, tmp_path / "out")
    assert json_path.read_text() == record.to_json()
    assert html_path.read_text().startswith("<!DOCTYPE html>")


# -- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("schema"), "r.json: schema: missing: not a results.json of failover-harness; run the suite "
                                "again (failover-harness run writes reports/results.json)"),
    (lambda d: d.update(schema=3), "r.json: schema: 3, but this harness reads results.json schema 1 or 2"),
    (lambda d: d["tests"][1].update(outcome="exploded"), "r.json: tests[1].outcome: Input should be 'passed', "),
    (lambda d: d["run"]["config"].pop("thresholds"), "r.json: run.config.thresholds: Field required: not the "
                                                     "results.json failover-harness writes"),
])
def test_results_of_another_shape_are_refused_naming_the_field(change: Any, message: str) -> None:
    doc = recorded_results()
    change(doc)
    with pytest.raises(ConfigError) as e:
        parse_results(doc, "r.json")
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_a_missing_or_unreadable_results_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--results: .*/none.json does not exist: run the suite first"):
        load_results(tmp_path / "none.json")
    (tmp_path / "r.json").write_text("<html>")
    with pytest.raises(ConfigError, match=r"r.json: not JSON \(Expecting value: line 1 column 1"):
        load_results(tmp_path / "r.json")


@pytest.fixture
def reset_cli_globals() -> Iterator[None]:
    yield
    progress.set_sink(None)  # cli.main points the progress lines at stderr


@pytest.mark.usefixtures("reset_cli_globals")
@pytest.mark.parametrize(("results", "inventory", "out", "message"), [
    ("none.json", "lab.toml", "out", "failover-harness: --results: {tmp}/none.json does not exist: run the suite "
                                     "first"),
    ("schema3.json", "lab.toml", "out", "failover-harness: {tmp}/schema3.json: schema: 3, but this harness reads"),
    ("results.json", "none.toml", "out", "failover-harness: {tmp}/none.toml: no such inventory file"),
    ("results.json", "typo.toml", "out", "failover-harness: {tmp}/typo.toml: hosts.src.vfs[0]: '3b:02.0' is not a "
                                         "PCI address like 0000:3b:02.0"),
    ("results.json", "lab.toml", "lab.toml", "failover-harness: --out: {tmp}/lab.toml is not a directory"),
])
def test_certify_refuses_bad_input_in_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], results: str, inventory: str, out: str,
        message: str) -> None:
    doc = recorded_results()
    (tmp_path / "results.json").write_text(json.dumps(doc))
    (tmp_path / "schema3.json").write_text(json.dumps(doc | {"schema": 3}))
    lab = (Path(__file__).parents[2] / "profiles" / "lab-example.toml").read_text()
    (tmp_path / "lab.toml").write_text(lab)
    (tmp_path / "typo.toml").write_text(lab.replace('vfs = ["0000:3b:02.0"', 'vfs = ["3b:02.0"', 1))
    before = sorted(tmp_path.iterdir())
    code = cli.main(["certify", "--results", str(tmp_path / results), "--inventory", str(tmp_path / inventory),
                     "--out", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1, err
    assert sorted(tmp_path.iterdir()) == before and (tmp_path / "lab.toml").read_text() == lab
