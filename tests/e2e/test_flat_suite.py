"""The conformance suite end to end on the flat topology, with real QEMU, guests and namespaces.

Each test runs ``pytest testcases`` in a subprocess exactly as a user would,
then looks at what the user gets (exit status, messages, reports) and at what
is left on the host (it must be nothing).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.image import GuestImage
from harness.netns import NETNS_PREFIX, list_harness_netns
from harness.phases import PHASE_NAMES
from harness.report import load_test_data
from tests.conftest import REPO, SuiteRun, run_suite, suite_argv

WRAPPERS = Path(__file__).parent / "qemu-wrappers"
# Broken setups fail on these anyway; short deadlines keep the tests quick.
FAST_FAIL = ("--threshold", "primary_restore_deadline_s=5")
PROBES_CASE = ("-k", "under_probes and acpi")
IPERF_CASE = ("-k", "under_iperf3")


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def leftovers(pid: int) -> list[str]:
    """Anything the harness run *pid* created that still exists."""
    found = [f"netns {n}" for n in list_harness_netns() if n.startswith(f"{NETNS_PREFIX}{pid}-")]
    found += [f"run dir {p}" for p in Path("/tmp").glob(f"fohx-{pid}-*")]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        text = b" ".join(args).decode(errors="replace")
        if "qemu-system" in text and f"/tmp/fohx-{pid}-" in text:
            found.append(f"process {cmdline.parent.name}: {text[:100]}")
    return found


def run_broken(tmp_path: Path, wrapper: str, *args: str) -> SuiteRun:
    """Run the suite on QEMU wrapper *wrapper*: it must fail, and leave nothing behind."""
    # Cold boots: a wrapper may break the boot itself, which a restored guest would skip. Timing
    # isolation shared: these runs judge no time, so they may overlap (make check's two workers);
    # the runs whose times are judged (a passing suite) still run their timing cases alone.
    run = run_suite(tmp_path, "--qemu-binary", str(WRAPPERS / wrapper), "--no-snapshots", "--timing-isolation",
                    "shared", *FAST_FAIL, *args)
    assert run.returncode == 1, run.output
    assert leftovers(run.pid) == []
    return run


def _check(run_results: dict, name: str, case: str = "under_probes[acpi]") -> str:
    (test,) = [t for t in run_results["tests"] if case in t["nodeid"]]
    return str(test["checks"].get(name, "missing"))


def _phase(run_results: dict, phase: str, figure: str, case: str = "under_probes[acpi]") -> float:
    (test,) = [t for t in run_results["tests"] if case in t["nodeid"]]
    return float(test["migration_phases"][f"{phase}.{figure}"])


# whole_host: it proves a healthy failover passes every check, timing ones included. The timing lock
# keeps other harness QEMUs away from a timing case, not the other worker's CPU load: in make check's
# shared pass, CI saw a destination-standby gap of 144 ms (its limit was 120 ms then) under that load.
@pytest.mark.whole_host
def test_passing_run_reports_metrics_and_leaves_nothing(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "--html", str(tmp_path / "report.html"), "--self-contained-html")
    assert run.returncode == 0, run.output
    results = run.results()
    assert results["summary"] == {"passed": 31, "xfailed": 2}
    # A passing (or xfailed) case keeps no evidence; every case's logs were scanned clean.
    assert not run.artifacts.exists() or not any(run.artifacts.iterdir())
    assert all(t["checks"]["logs_clean"].startswith("PASS") for t in results["tests"] if t["outcome"] == "passed")
    probes, iperf = (next(t for t in results["tests"] if case in t["nodeid"]) for case in ("probes[acpi]", "iperf3"))
    for test in (probes, iperf):
        assert all(v.startswith("PASS") for v in test["checks"].values()), test["checks"]
        for name in ("unplug_wait_ms", "downtime_ms", "observed_downtime_ms", "total_time_ms"):
            assert test["metrics"][name] > 0, name
        # The whole timeline, for trend tools: compressed beside results.json, which stays small.
        timeline = load_test_data(run.results_path, test, "timeline")
        assert {e["name"] for e in timeline["events"]} >= {"UNPLUG_PRIMARY", "STOP", "RESUME"}
        assert timeline["guest_events"] and timeline["clock_uncertainty_s"] is not None
    m = probes["metrics"]
    assert m["probes_sent"] > 1000 and m["final_path"] == "primary"
    assert m["switch_to_standby_ms"] is not None and m["failback_ms"] is not None
    assert m["replies_on_primary"] > 0 and m["replies_on_standby"] > 0  # both paths carried traffic
    phases = probes["migration_phases"]  # every probe in exactly one phase
    assert sum(phases[f"{p}.probes_lost"] for p in PHASE_NAMES) == m["probes_lost"]
    assert sum(phases[f"{p}.probes_sent"] for p in PHASE_NAMES) == m["probes_sent"]
    assert iperf["metrics"]["throughput_after_resume_mbps"] > 1
    junit = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    props = junit["test_migration_with_failover_under_probes[acpi]"]
    assert props["metric.total_time_ms"] == str(probes["metrics"]["total_time_ms"])
    assert props["check.primary_restored"].startswith("PASS")
    assert not any(name.startswith("data.") for case in junit.values() for name in case), "bulk data leaked into JUnit"
    assert run.results_path.stat().st_size < 2_000_000  # the raw timelines are not in it
    html = (tmp_path / "report.html").read_text()
    assert "check.migration_completed" in html
    assert '<table class="harness-migrations">' in html  # the per-migration summary, at the top
    assert html.index("harness-migrations") < html.index("check.migration_completed")
    assert html.count("data:image/png;base64,") >= 2  # one timeline chart per migration case
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert not run.artifacts.exists() or not any(run.artifacts.iterdir()), "passing test kept artifacts"
    assert leftovers(run.pid) == []


def test_fails_when_failover_is_off(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "no-failover", *PROBES_CASE)
    results = run.results()
    assert _check(results, "failover_negotiated").startswith("FAIL failover_negotiated: FAILOVER_NEGOTIATED events "
                                                             "on the source: none")
    assert _check(results, "primary_enslaved_before_migration").startswith("FAIL")
    assert _check(results, "unplug_primary_emitted").startswith("FAIL")
    assert _check(results, "wait_unplug_entered").startswith("FAIL")
    assert _check(results, "switch_to_standby_ms").startswith("FAIL switch_to_standby_ms: not measured")
    assert "FAIL failover_negotiated" in run.output
    (test,) = results["tests"]  # a timing case, run beside others as asked
    assert test["run"]["isolation"].endswith("a timing case (--timing-isolation shared: its times include the "
                                             "neighbours')"), test["run"]
    # Evidence is kept for the failed case.
    (case_dir,) = run.artifacts.iterdir()
    assert (case_dir / "src-console.log").stat().st_size > 0
    assert (case_dir / "src-qmp.jsonl").exists() and (case_dir / "probes.jsonl").exists()


def test_negotiation_case_fails_when_the_primary_is_never_hidden(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "no-failover", "-k", "negotiation")
    results = run.results()
    case = "negotiation_reveals_the_primary"
    assert _check(results, "primary_hidden_before_negotiation", case).startswith(
        "FAIL primary_hidden_before_negotiation: /machine/peripheral before the guest ran: ['primary0'")
    assert _check(results, "failover_negotiated", case).startswith("FAIL")


def test_negotiation_case_fails_when_the_primary_cannot_be_created(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "primary-bad-netdev", "-k", "negotiation")
    results = run.results()
    case = "negotiation_reveals_the_primary"
    assert _check(results, "primary_hidden_before_negotiation", case).startswith("PASS")
    assert _check(results, "failover_negotiated", case).startswith("PASS")
    present = _check(results, "primary_present_after_negotiation", case)
    assert present.startswith("FAIL") and "can't find value 'nonexistent'" in present  # QEMU's warning, quoted
    assert _check(results, "primary_enslaved_after_negotiation", case).startswith("FAIL")


def test_fails_when_destination_lacks_its_primary(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "destination-without-primary", *PROBES_CASE)
    results = run.results()
    assert _check(results, "migration_completed").startswith("PASS")  # QEMU only warns: that is the trap
    restored = _check(results, "primary_restored")
    assert restored.startswith("FAIL primary_restored: primary not restored")
    assert "Primary device not found" in restored  # QEMU's warning, quoted from its stderr
    assert _check(results, "traffic_back_on_primary").startswith("FAIL traffic_back_on_primary: the last replies "
                                                                 "travelled on: standby")
    assert _check(results, "failback_ms").startswith("FAIL failback_ms: not measured")


def test_fails_when_destination_is_unreachable(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "isolate-destination", "-k", "under_probes and acpi or under_iperf3")
    results = run.results()
    assert results["summary"] == {"failed": 2}
    assert _check(results, "tcp_survived", "iperf3").startswith("FAIL tcp_survived: the iperf3 stream broke")
    assert _check(results, "primary_restored").startswith("PASS")  # the guest is fine, its network is not
    assert _check(results, "replies_resumed") == "FAIL replies_resumed: 0 probe replies after the destination resumed"
    assert _check(results, "probes_lost").startswith("FAIL probes_lost: measured")
    assert _check(results, "max_gap_ms").startswith("FAIL max_gap_ms: measured")


def test_fails_without_a_baseline(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "isolate-source", *PROBES_CASE)
    results = run.results()
    assert _check(results, "probe_baseline").startswith("FAIL probe_baseline: no probe reply before migration")
    assert _check(results, "replies_resumed").startswith("PASS")  # the destination's taps are on the bridge


def test_fails_when_migration_fails(tmp_path: Path) -> None:
    # The option-ROM bug: the destination refuses the stream and exits.
    run = run_broken(tmp_path, "primary-with-rom", *PROBES_CASE)
    results = run.results()
    completed = _check(results, "migration_completed")
    assert completed.startswith("FAIL migration_completed: status failed"), completed
    assert _check(results, "primary_restored").startswith("FAIL primary_restored: primary not restored")
    (case_dir,) = run.artifacts.iterdir()
    assert "Unknown ramblock" in completed  # quoted from the destination QEMU
    assert "Unknown ramblock" in (case_dir / "dst-qemu.log").read_text()


def test_option_rom_case_tells_when_qemu_is_fixed(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-k", "option_rom")  # the real QEMU: the known bug, a strict xfail
    assert run.returncode == 0, run.output
    assert run.results()["summary"] == {"xfailed": 1}
    run = run_suite(tmp_path, "--qemu-binary", str(WRAPPERS / "rom-bug-fixed"), "-k", "option_rom")
    assert run.returncode == 1, run.output
    assert "XPASS(strict)" in run.output and "Unknown ramblock" in run.output
    assert leftovers(run.pid) == []
    # The expected failure absorbs the ROM bug's symptom only: on a QEMU that never negotiates
    # failover the case fails (it once reported XFAIL there).
    run = run_broken(tmp_path, "no-failover", "-k", "option_rom")
    results = run.results()
    assert results["summary"] == {"failed": 1}, run.output
    assert _check(results, "failover_negotiated", "option_rom").startswith("FAIL failover_negotiated")


# Failover's promise, phase by phase: where the standby does not carry, or the primary stops after
# the fail-back, the phase's check fails and says what the phase saw.
@pytest.mark.parametrize(("wrapper", "failed", "passed"), [
    ("isolate-standby-source", "standby_carried_on_source", "standby_carried_on_destination"),
    ("isolate-standby-destination", "standby_carried_on_destination", "standby_carried_on_source"),
    ("standby-link-down-at-unplug", "standby_carried_on_source", "switch_to_standby_ms"),
    ("cut-primary-destination", "no_outage_after_restore", "standby_carried_on_destination"),
], ids=["source-standby-deaf", "destination-standby-deaf", "standby-link-down", "primary-cut-after-restore"])
def test_promise_checks_fail_where_the_network_is_lost(tmp_path: Path, wrapper: str, failed: str,
                                                      passed: str) -> None:
    run = run_broken(tmp_path, wrapper, *PROBES_CASE)
    results = run.results()
    verdict = _check(results, failed)
    assert verdict.startswith(f"FAIL {failed}: longest time without a reply"), verdict
    # Most of the phase's probes went unanswered. The cut primary carries first, until the guest sent
    # 100 frames through it: CI saw 129 of 627 answered.
    lost, sent = map(int, re.search(r"(\d+) of (\d+) probes lost", verdict).groups())
    assert lost >= 0.5 * sent, verdict
    if not wrapper.startswith("cut-"):
        # A standby that carries nothing: no reply reaches the peer in the whole phase. (Some of its
        # requests are answered later, as the destination QEMU delivers what its taps queued while it
        # waited: CI saw 144 of 1152; and a few replies leave the deaf destination's standby, lost on their
        # way out. So neither the loss count nor the replies seen leaving the guest say it.)
        gap, phase_ms = map(float, re.search(r"reply ([\d.]+) ms, .*? lasted (\d+) ms", verdict).groups())
        assert gap >= phase_ms - 1, verdict
    if passed == "switch_to_standby_ms":  # a standby that is down never carries
        assert _check(results, passed).startswith("FAIL switch_to_standby_ms: not measured (limit ")
    else:
        assert _check(results, passed).startswith(f"PASS {passed}")
    outage = _check(results, "stop_copy_outage_within_downtime")
    if failed == "standby_carried_on_source":  # the silence runs from the unplug into stop-and-copy
        assert outage.startswith("FAIL stop_copy_outage_within_downtime: outage across stop-and-copy"), outage
        # The absolute limits, derived from healthy runs, catch the source's silence too (limits of
        # 4-8 s once let it pass); the destination's phase can be shorter than max_gap_ms.
        assert _check(results, "max_gap_ms").startswith("FAIL max_gap_ms: measured"), _check(results, "max_gap_ms")
    elif failed == "standby_carried_on_destination":
        # The silence runs from STOP until the primary carries: the check puts it after RESUME (it
        # fails it too only when that phase outlasts the tolerance, which a fast primary may not).
        after_resume = int(re.search(r"(\d+) ms after RESUME", outage).group(1))
        assert after_resume >= 0.9 * _phase(results, "destination_standby", "ms"), outage


def test_a_destination_standby_that_drops_most_probes_fails_on_its_loss(tmp_path: Path) -> None:
    """The destination's standby passes about one probe in ten, as a NIC steering most of the
    failover MAC's frames to a VF no guest drives would: its replies keep coming, so no gap need
    reach the phase's limit, and the phase's loss is what fails it."""
    run = run_broken(tmp_path, "lossy-standby-destination", *PROBES_CASE)
    results = run.results()
    verdict = _check(results, "standby_carried_on_destination")
    assert verdict.startswith("FAIL standby_carried_on_destination: longest time without a reply"), verdict
    assert "; frames lost while replies kept coming: more than its limit allows" in verdict, verdict
    assert float(re.search(r"outside its longest gap \(([\d.]+) %", verdict).group(1)) >= 50, verdict
    assert _check(results, "standby_carried_on_source").startswith("PASS standby_carried_on_source"), results


def test_a_qemu_that_dies_after_the_standby_is_removed_fails_its_survival(tmp_path: Path) -> None:
    # As QEMUs before 5.1 (then device_del of the primary) and 6.1 (then migrate) crashed.
    run = run_broken(tmp_path, "qemu-dies-after-standby-removal", "-k", "standby_removed_first")
    results = run.results()
    assert results["summary"] == {"failed": 2}, run.output
    for then in ("primary-removed", "migrated"):
        case = f"standby_removed_first[{then}]"
        assert _check(results, "standby_deleted", case).startswith("PASS standby_deleted")
        survived = _check(results, "qemu_survived", case)
        assert survived.startswith("FAIL qemu_survived: src: QEMU exited"), survived
    # QEMU quits as the event arrives: the case sees it gone, or its migrate finds it gone.
    ended = _check(results, "migration_ended", "standby_removed_first[migrated]")
    assert ended.startswith("FAIL migration_ended: ") and ("QEMU is gone" in ended or "QEMU exited" in ended), ended


def test_fails_when_destination_crawls(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "--qemu-binary", str(WRAPPERS / "throttle-destination"), *IPERF_CASE)
    assert run.returncode == 1, run.output
    results = run.results()
    assert _check(results, "tcp_survived", "iperf3").startswith("PASS")  # slow, not broken
    assert _check(results, "throughput_after_resume_mbps", "iperf3").startswith(
        "FAIL throughput_after_resume_mbps: measured")
    assert leftovers(run.pid) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_leaves_nothing(tmp_path: Path, signum: signal.Signals) -> None:
    proc = subprocess.Popen(suite_argv(tmp_path), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not any("process" in item for item in leftovers(proc.pid)):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "QEMU never started"
            time.sleep(0.2)
        assert leftovers(proc.pid), "nothing to clean up: the interrupt would prove nothing"
        proc.send_signal(signum)  # SIGINT is what Ctrl-C sends
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in out, out
    assert leftovers(proc.pid) == []
    results = tmp_path / "results.json"
    assert not results.exists() or json.loads(results.read_text())["exit_status"] == 2


def test_interrupted_soak_leaves_nothing(tmp_path: Path) -> None:
    # The soak command waits on a pytest of its own: Ctrl-C (here to the command alone, as a
    # terminal's reaches it) must give that pytest its teardown, not a SIGKILL.
    cli = Path(sys.executable).parent / "failover-harness"
    proc = subprocess.Popen(["env", "--default-signal=INT", str(cli), "soak", "--migrations", "50", "--reports",
                             str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        pytest_pid = None
        while pytest_pid is None or not any("process" in item for item in leftovers(pytest_pid)):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the soak's QEMU never started"
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            pytest_pid = int(children[0]) if children else None
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out  # pytest's "interrupted", passed on
    assert "KeyboardInterrupt" in out and "Traceback" not in out, out
    assert leftovers(pytest_pid) == []


def test_user_guest_kernel(tmp_path: Path, guest_image: GuestImage) -> None:
    """--guest-kernel/--guest-modules: a kernel developer's build, here Debian's kernel unpacked as one would be."""
    debs = sorted((guest_image.kernel.parent.parent.parent / "debs").glob("linux-image-*.deb"))
    assert debs, "the image cache holds no kernel package"
    tree = tmp_path / "linux"
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tree)], check=True)
    (bzimage,) = (tree / "boot").glob("vmlinuz-*")
    version = bzimage.name.removeprefix("vmlinuz-")
    subprocess.run(["depmod", "-b", str(tree), version], check=True)  # what 'make modules_install' does
    run = run_suite(tmp_path, "--guest-kernel", str(bzimage), "--guest-modules", str(tree), *PROBES_CASE)
    assert run.returncode == 0, run.output
    assert run.results()["summary"] == {"passed": 1}
    assert leftovers(run.pid) == []


def test_a_distro_kernel_package_by_name(tmp_path: Path, guest_image: GuestImage) -> None:
    """--guest-kernel linux-image-...: apt fetches the package (here the image's own kernel, from the
    cache), the harness unpacks and indexes it in its cache, and the guest boots it."""
    release = guest_image.kernel_version
    run = run_suite(tmp_path, "--guest-kernel", f"linux-image-{release}", "-k", "negotiation and power-on")
    assert run.returncode == 0, run.output
    (test,) = run.results()["tests"]
    assert test["outcome"] == "passed" and test["run"]["guest_kernel"] == release
    assert leftovers(run.pid) == []


def test_e1000e_primary_fails_the_take_over_it_delays(tmp_path: Path) -> None:
    """--flat-primary e1000e: the guest drives an e1000e, and waits for QEMU's emulated 500 ms
    autonegotiation after it registered it, when net_failover no longer takes the standby's frames.
    primary_took_over fails on that outage, naming the phase; the rest of the promise holds."""
    run = run_suite(tmp_path, "--flat-primary", "e1000e", *PROBES_CASE)
    assert run.returncode == 1, run.output
    results = run.results()
    assert "primary=eth2(e1000e,up)" in _check(results, "primary_enslaved_before_migration")
    took_over = _check(results, "primary_took_over")
    assert took_over.startswith("FAIL primary_took_over: longest time without a reply"), took_over
    assert "limit 50 ms; primary_coming_up lasted" in took_over and "on the primary 0" in took_over, took_over
    for kept in ("standby_carried_on_source", "stop_copy_outage_within_downtime", "standby_carried_on_destination",
                 "no_outage_after_restore"):
        assert _check(results, kept).startswith(f"PASS {kept}"), _check(results, kept)
    assert leftovers(run.pid) == []


# -- the suite's other cases, each shown to fail on a broken setup -------------------------------------------------

def test_fault_path_case_fails_without_failover(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "no-failover", "-k", "destination-killed")
    results, case = run.results(), "destination-killed"
    assert _check(results, "attempt.unplug_primary_emitted", case).startswith("FAIL")
    assert _check(results, "attempt.primary_replugged", case).startswith(
        "FAIL attempt.primary_replugged: primary not back on the source")
    assert _check(results, "attempt.traffic_back_on_primary", case).startswith(
        "FAIL attempt.traffic_back_on_primary: the last replies travelled on: standby")
    assert _check(results, "attempt.migration_ended_as_expected", case).startswith("PASS")  # the kill still hit


def test_never_eject_case_fails_when_the_guest_cannot_get_stuck(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "no-failover", "-k", "never_ejects")
    results, case = run.results(), "never_ejects"
    assert _check(results, "stuck_in_wait_unplug", case).startswith("FAIL")
    assert _check(results, "cancelled", case).startswith("FAIL cancelled: status completed")
    assert _check(results, "qemu_cancel_grace_measured", case).startswith("FAIL")
    assert _check(results, "qemu_warned_partial_unplug", case).startswith("FAIL")


def test_degraded_destination_case_fails_without_qemus_warning(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "quiet-destination", "-k", "degraded and absent")
    results, case = run.results(), "degraded_destination_is_reported[absent]"
    assert _check(results, "destination_warned", case) == (
        "FAIL destination_warned: QEMU on the destination said nothing")
    assert _check(results, "degradation_reported", case).startswith("FAIL")
    assert _check(results, "guest_on_standby", case).startswith("PASS")


def test_pairing_cases_fail_when_qemu_accepts_everything(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "ignore-failover-pairing", "-k", "primary-without-id or igb-primary")
    results = run.results()
    assert results["summary"] == {"failed": 2}
    for case in ("primary-without-id", "igb-primary"):
        assert _check(results, "qemu_refused", case).startswith("FAIL qemu_refused: QEMU started")
        assert _check(results, "qemu_message_explained", case).startswith("FAIL")
    assert _check(results, "guest_runs_on_standby_alone", "igb-primary").startswith("FAIL")


def test_ordering_case_fails_when_the_primary_is_hidden_anyway(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "standby-first", "-k", "primary_before_standby")
    visible = _check(run.results(), "primary_visible_before_negotiation", "primary_before_standby")
    assert visible.startswith("FAIL primary_visible_before_negotiation: /machine/peripheral before the guest ran: "
                              "['rp0', 'rp1', 'standby0']"), visible


def test_mac_mismatch_case_fails_when_the_macs_match(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "same-mac-primary", "-k", "mac_mismatch")
    assert _check(run.results(), "primary_not_enslaved", "mac_mismatch").startswith("FAIL primary_not_enslaved")


def test_guest_behaviour_cases_fail_without_failover(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "no-failover", "-k", "renegotiated and driver-reload")
    results, case = run.results(), "driver-reload"
    assert _check(results, "failover_negotiated_again", case).startswith(
        "FAIL failover_negotiated_again: FAILOVER_NEGOTIATED after the driver-reload: none")
    assert _check(results, "primary_enslaved_again", case).startswith("FAIL")


def test_cases_fail_on_an_isolated_source(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "isolate-source", "-k", "unplug_and_replug or never_ejects")
    results, case = run.results(), "unplug_and_replug"
    assert _check(results, "replies_resumed", "never_ejects") == (
        "FAIL replies_resumed: 0 probe replies after the cancel")
    assert _check(results, "standby_carried_traffic", case).startswith(
        "FAIL standby_carried_traffic: 0 probe replies left the guest while the primary was gone")
    assert _check(results, "traffic_back_on_primary", case).startswith("FAIL")
    assert _check(results, "tcp_session_survived", case).startswith("FAIL")
    assert _check(results, "primary_reenslaved", case).startswith("PASS")  # the guest is fine, its network is not


def test_two_pair_case_fails_without_failover(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "no-failover", "-k", "two_failover")
    results, case = run.results(), "two-pairs"
    assert _check(results, "pair2.primary_enslaved_before_migration", case).startswith("FAIL")
    assert _check(results, "pair2.unplug_primary_emitted", case) == (
        "FAIL pair2.unplug_primary_emitted: UNPLUG_PRIMARY on the source: none")
    assert _check(results, "pair2.replies_resumed", case).startswith("PASS")  # the second pair's standby works


def test_dirtying_case_fails_when_the_workload_dirties_nothing(tmp_path: Path) -> None:
    profile = tmp_path / "idle.toml"
    profile.write_text("dirty_workload_mib = 0\n")
    run = run_suite(tmp_path, "--harness-config", str(profile), "-k", "dirtying")
    assert run.returncode == 1, run.output
    dirtied = _check(run.results(), "workload_dirtied_memory", "dirtying")
    assert dirtied.startswith("FAIL workload_dirtied_memory: 0 passes of 0 MiB"), dirtied
    assert _check(run.results(), "workload_kept_running", "dirtying").startswith("FAIL")
    assert leftovers(run.pid) == []


def test_cases_fail_when_the_guest_ignores_hotplug(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "guest-without-hotplug", "--threshold", "wait_unplug_deadline_s=5",
                     "-k", "destination-killed or unplug_and_replug or never_ejects or primary-removed")
    results = run.results()
    assert results["summary"] == {"failed": 4}
    killed = "destination-killed"
    # The guest never ejects: the harness cancels in wait-unplug, before the kill in active could happen.
    assert _check(results, "attempt.fault_hit_in_state", killed).startswith("FAIL attempt.fault_hit_in_state: "
                                                                            "source states ['setup', 'wait-unplug'")
    assert _check(results, "attempt.migration_ended_as_expected", killed).startswith(
        "FAIL attempt.migration_ended_as_expected: destination QEMU killed (SIGKILL) during active: status cancelled")
    replug = "unplug_and_replug"
    assert _check(results, "primary_deleted", replug).startswith("FAIL primary_deleted: device_del: ")
    assert _check(results, "primary_reenslaved", replug).startswith("FAIL")
    assert _check(results, "source_recovered", "never_ejects").startswith("FAIL")
    removed = "standby_removed_first[primary-removed]"
    assert _check(results, "standby_deleted", removed).startswith("FAIL standby_deleted: device_del standby0: ")
    assert _check(results, "primary_deleted", removed).startswith("FAIL primary_deleted: device_del primary0: ")
    assert _check(results, "qemu_survived", removed).startswith("PASS")  # QEMU is fine, its guest is not


def test_reboot_case_fails_when_qemu_exits_on_reboot(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "no-reboot", "-k", "renegotiated and reboot")
    again = _check(run.results(), "failover_negotiated_again", "reboot")
    assert again.startswith("FAIL failover_negotiated_again: FAILOVER_NEGOTIATED after the reboot: none"), again
    assert "no RESET event" in again


def test_ordering_case_fails_when_the_guest_cannot_pair(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "primary-mac-off", "-k", "primary_before_standby")
    results, case = run.results(), "primary_before_standby"
    assert _check(results, "primary_visible_before_negotiation", case).startswith("PASS")
    assert _check(results, "guest_enslaves_it", case).startswith("FAIL guest_enslaves_it: master=")


def test_pairing_case_fails_when_qemu_rewords_its_error(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "reworded-errors", "-k", "primary-without-id")
    results, case = run.results(), "primary-without-id"
    assert _check(results, "qemu_refused", case).startswith("FAIL qemu_refused: QEMU exited at start")
    assert _check(results, "qemu_message_explained", case) == (
        "FAIL qemu_message_explained: no primary-without-id in QEMU's messages")
    assert _check(results, "error_in_plain_words", case).startswith("FAIL")


def test_mac_mismatch_case_fails_when_qemu_cannot_create_the_primary(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "primary-bad-netdev", "-k", "mac_mismatch")
    assert _check(run.results(), "primary_plugged_by_qemu", "mac_mismatch") == (
        "FAIL primary_plugged_by_qemu: primary0 not in QOM")


@pytest.mark.parametrize(("wrapper", "check", "failure"), [
    ("primary-with-rom", "migration_completed", "FAIL migration_completed: status failed"),
    ("isolate-destination", "guest_on_standby", "FAIL guest_on_standby: after resume: 0 replies"),
], ids=["migration-fails", "destination-isolated"])
def test_degraded_destination_case_fails_on_a_broken_destination(tmp_path: Path, wrapper: str, check: str,
                                                                 failure: str) -> None:
    run = run_broken(tmp_path, wrapper, "-k", "degraded and absent")
    assert _check(run.results(), check, "degraded_destination_is_reported[absent]").startswith(failure)


def test_fault_path_case_fails_when_the_primary_is_not_back_after_a_failure(tmp_path: Path) -> None:
    # As QEMUs before 150ab54aa6 (5.0) and ca72efccbe (6.2) left the guest without its primary.
    run = run_broken(tmp_path, "primary-gone-after-failure", "-k", "destination-killed")
    results, case = run.results(), "destination-killed"
    assert _check(results, "attempt.source_kept_running", case).startswith("PASS")
    assert _check(results, "attempt.primary_replugged", case).startswith(
        "FAIL attempt.primary_replugged: primary not back on the source: "), results
    assert _check(results, "attempt.traffic_back_on_primary", case).startswith(
        "FAIL attempt.traffic_back_on_primary: the last replies travelled on: standby")


def test_fault_path_case_fails_when_the_source_pauses_on_failure(tmp_path: Path) -> None:
    run = run_broken(tmp_path, "pause-source-on-failure", "-k", "destination-killed")
    results, case = run.results(), "destination-killed"
    assert _check(results, "attempt.source_kept_running", case) == (
        "FAIL attempt.source_kept_running: source VM status after the attempt: paused")
    assert _check(results, "attempt.primary_replugged", case).startswith("FAIL")
