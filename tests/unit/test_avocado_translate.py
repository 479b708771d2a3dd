"""harness.avocado.translate: results.json entries to avocado results, ``-p`` parameters to harness options,
cases to tags; no avocado needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.avocado.translate import (
    ROOT,
    avocado_result,
    case_argv,
    parameters,
    pytest_options,
    tags,
    whiteboard,
)
from harness.errors import ConfigError

FAILED = {
    "nodeid": "testcases/test_migration.py::test_ping_pong_migration", "outcome": "failed", "duration_s": 30.8,
    "metrics": {"hop1.downtime_ms": 812.0},
    "checks": {"hop1.migration_completed": "PASS hop1.migration_completed: status completed",
               "hop1.max_gap_ms": "FAIL hop1.max_gap_ms: measured 2412.0 ms, limit 2000 ms",
               "logs_clean": "FAIL logs_clean: a call trace in the guest console"},
    "message": "def test_ping_pong_migration(...):\n>       checks.verify()\nE   AssertionError: 2 of 3 checks failed:",
}


def test_a_failed_case_fails_naming_every_failed_check() -> None:
    assert avocado_result(FAILED, 1, "") == (
        "fail", "FAIL hop1.max_gap_ms: measured 2412.0 ms, limit 2000 ms; FAIL logs_clean: a call trace in the "
                "guest console")


@pytest.mark.parametrize(("entry", "expected"), [
    ({"outcome": "passed", "checks": {"a": "PASS a: fine"}}, ("pass", None)),
    ({"outcome": "failed", "checks": {}, "message": "    raise X\nE   RuntimeError: QMP went away\nE   more"},
     ("fail", "more")),
    ({"outcome": "failed", "checks": {}, "message": "[XPASS(strict)] QEMU 10.0: the option ROM bug"},
     ("fail", "[XPASS(strict)] QEMU 10.0: the option ROM bug")),
    ({"outcome": "skipped", "message": "Skipped: the flat topology has no VF"},
     ("skip", "Skipped: the flat topology has no VF")),
    ({"outcome": "xfailed", "message": "QEMU 10.0: the ROM stays", "checks": {"x": "FAIL x: Unknown ramblock"}},
     ("warn", "expected failure: QEMU 10.0: the ROM stays; FAIL x: Unknown ramblock")),
    ({"outcome": "error", "message": "fixture 'failover_bed'\nE   harness.errors.BootTimeout: no login in 120 s"},
     ("error", "harness.errors.BootTimeout: no login in 120 s")),
], ids=["passed", "failed-without-checks", "xpass-strict", "skipped", "xfailed", "error-in-setup"])
def test_every_outcome_has_its_avocado_status(entry: dict[str, object], expected: tuple[str, str | None]) -> None:
    assert avocado_result(entry, 0, "") == expected


def test_no_entry_is_an_error_saying_what_pytest_said() -> None:
    output = "collected 0 items\n\nERROR: not found: /x/testcases/test_nope.py::test_nope\n\n"
    assert avocado_result(None, 4, output) == (
        "error", "pytest exited 4 without a result for the case: ERROR: not found: /x/testcases/test_nope.py::"
                 "test_nope")
    usage = ("ERROR: usage: python -m pytest [options] [file_or_dir]\npython -m pytest: error: argument --accel: "
             "invalid choice: 'bogus'\n  inifile: /x/pyproject.toml\n  rootdir: /x\n")
    assert avocado_result(None, 4, usage)[1] == ("pytest exited 4 without a result for the case: python -m pytest: "
                                                 "error: argument --accel: invalid choice: 'bogus'")
    assert avocado_result(None, -9, "") == ("error", "pytest exited -9 without a result for the case")
    stopped = "!!!! KeyboardInterrupt !!!!\n/x/harness/guest.py:94: KeyboardInterrupt\n== no tests ran in 7.86s =="
    assert avocado_result(None, 2, stopped)[0] == "interrupted"
    broken = "!!!!!!!! Interrupted: 1 error during collection !!!!!!!!\n== 1 error in 0.52s =="
    assert avocado_result(None, 2, broken) == ("error", "pytest exited 2 without a result for the case: == 1 error in "
                                                        "0.52s ==")


def test_the_whiteboard_holds_the_figures_not_the_traceback() -> None:
    board = json.loads(whiteboard(FAILED))
    assert board["metrics"] == {"hop1.downtime_ms": 812.0}
    assert board["checks"] == FAILED["checks"]
    assert board["outcome"] == "failed"
    assert "message" not in board
    assert json.loads(whiteboard(None)) == {}


def test_parameters_come_from_the_runnable_variant() -> None:
    # What `avocado run -p topology=nested -p threshold=max_gap_ms=2000` serialises into each runnable.
    variant = {"paths": ["/"], "variant_id": None,
               "variant": [["/", [["/", "topology", "nested"], ["/", "threshold", "max_gap_ms=2000"]]]]}
    assert parameters(variant) == {"topology": "nested", "threshold": "max_gap_ms=2000"}
    assert parameters(None) == {}
    assert parameters({"variant": [["/", []]], "paths": ["/"]}) == {}


def test_parameters_become_the_harness_options() -> None:
    assert pytest_options({
        "topology": "nested", "qemu-binary": "tests/e2e/qemu-wrappers/no-failover", "inventory": "lab.toml",
        "threshold": "max_gap_ms=2000", "threshold.loss": "max_lost_probes=50",
        "require_resources": "true", "no_snapshots": "false", "keep_artifacts": "all",
    }) == ["--inventory=lab.toml", "--keep-artifacts=all", "--qemu-binary=tests/e2e/qemu-wrappers/no-failover",
           "--require-resources", "--threshold=max_gap_ms=2000", "--threshold=max_lost_probes=50",
           "--topology=nested"]


@pytest.mark.parametrize(("params", "message"), [
    ({"qemu_bianry": "x"}, "-p qemu_bianry=x: not an option of the harness; the options: accel, allow_log,"),
    ({"results_json": "x"}, "-p results_json=x: not an option of the harness (the runner sets it)"),
    ({"topology.2": "flat"}, "-p topology.2=flat: only a repeatable option takes a .SUFFIX (allow_log, threshold)"),
    ({"require_resources": "maybe"}, "-p require_resources=maybe: a flag: give true or false"),
], ids=["typo", "runner-owned", "suffix-on-a-single-option", "flag-not-boolean"])
def test_a_parameter_the_harness_does_not_take_is_refused(params: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        pytest_options(params)
    assert str(refused.value).startswith(message)


def test_the_case_runs_with_its_evidence_in_the_data_directory(tmp_path: Path) -> None:
    argv = case_argv("testcases/test_migration.py::test_x[acpi]", {"accel": "tcg"}, tmp_path / "data")
    assert argv[1:4] == ["-m", "pytest", f"{ROOT}/testcases/test_migration.py::test_x[acpi]"]
    assert f"--results-json={tmp_path}/data/results.json" in argv
    assert f"--artifacts-dir={tmp_path}/data/artifacts" in argv
    assert argv[-1] == "--accel=tcg"


def test_tags_name_the_markers_and_what_the_case_needs() -> None:
    case = {"case": "x", "needs": ["hotplug-style"], "markers": ["allow_log", "timing"]}
    assert tags(case) == {"failover": None, "allow_log": None, "timing": None, "needs": {"hotplug-style"}}
    assert tags({"case": "y", "needs": [], "markers": []}) == {"failover": None}
