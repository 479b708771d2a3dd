"""report --merge: the shards' JUnit, results.json and HTML as one run's, and shards that are not one run refused."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import ConfigError
from harness.report import RESULTS_SCHEMA, safe_name
from harness.report.merge import merge_reports, merged_exit_status

CONFIG = {"qemu_binary": "qemu-system-x86_64", "accel": "auto", "topology": "flat", "cache_dir": "/root/.cache/fh",
          "artifacts_dir": "reports/artifacts", "thresholds": {"max_gap_ms": 4000}}
PROBES = "testcases/test_migration.py::test_migration_with_failover_under_probes[acpi]"
PAIRING = "testcases/test_pairing.py::test_pairing_error_is_recognised[two-primaries]"
IPERF = "testcases/test_migration.py::test_migration_with_failover_under_iperf3"


def _entry(nodeid: str, outcome: str, **extra: Any) -> dict[str, Any]:
    return {"nodeid": nodeid, "outcome": outcome, "duration_s": 12.5, "metrics": {}, "checks": {}, **extra}


def _write_shard(directory: Path, tests: list[dict[str, Any]], exit_status: int, started: float,
                 config: dict[str, Any] = CONFIG) -> Path:
    """A shard's reports as failover-harness run writes them (with what the merge reads of each)."""
    directory.mkdir(parents=True)
    summary: dict[str, int] = {}
    for t in tests:
        summary[t["outcome"]] = summary.get(t["outcome"], 0) + 1
    doc = {"schema": RESULTS_SCHEMA, "started": started, "finished": started + 100, "exit_status": exit_status,
           "host": {"kernel": "6.1.0-41-amd64"}, "run": {"config": config}, "summary": summary, "tests": tests}
    (directory / "results.json").write_text(json.dumps(doc))
    cases = "".join(f'<testcase classname="c" name="{t["nodeid"]}" time="12.5">'
                    + ('<failure message="m">m</failure>' if t["outcome"] == "failed" else "") + "</testcase>"
                    for t in tests)
    failures = sum(t["outcome"] == "failed" for t in tests)
    (directory / "junit.xml").write_text(f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
                                         f'errors="0" failures="{failures}" skipped="0" tests="{len(tests)}" '
                                         f'time="{12.5 * len(tests)}">{cases}</testsuite></testsuites>')
    (directory / "report.html").write_text("<html>pytest-html</html>")
    return directory


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    failed = _entry(PROBES, "failed", checks={"max_gap_ms": "FAIL max_gap_ms: 5120 > 4000",
                                              "downtime_ms": "PASS downtime_ms: 87"},
                    metrics={"downtime_ms": 87.0}, migration_phases={"stop_and_copy.max_gap_ms": 820.0,
                                                                     "stop_and_copy.probes_lost": 3},
                    data_files={"timeline": f"results-timelines/{safe_name(PROBES)}.timeline.json.gz"})
    first = _write_shard(tmp_path / "a", [failed, _entry(PAIRING, "passed", reruns=1)], 1, 1000.0)
    evidence = first / "artifacts" / safe_name(PROBES)
    evidence.mkdir(parents=True)
    (evidence / "src-console.log").write_text("console")
    second = _write_shard(tmp_path / "b", [_entry(IPERF, "xfailed", message="known QEMU bug, fixed in 10.1")],
                          0, 1010.0, config={**CONFIG, "cache_dir": "/home/ci/.cache/fh"})
    return [first, second]


def test_the_shards_become_one_run_with_every_case_its_shard_and_links(shards: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    merged = merge_reports(shards, out)
    assert [(t["nodeid"], t["outcome"], t["shard"]) for t in merged["tests"]] == [
        (PROBES, "failed", "shard-1"), (PAIRING, "passed", "shard-1"), (IPERF, "xfailed", "shard-2")]
    assert merged["summary"] == {"failed": 1, "passed": 1, "flaky": 1, "xfailed": 1}
    assert (merged["exit_status"], merged["started"], merged["finished"]) == (1, 1000.0, 1110.0)
    assert [s["source"] for s in merged["shards"]] == [str(p) for p in shards]
    assert json.loads((out / "results.json").read_text()) == merged
    # The timeline link still leads to the file, now under shards/.
    assert merged["tests"][0]["data_files"]["timeline"] == (
        f"shards/shard-1/results-timelines/{safe_name(PROBES)}.timeline.json.gz")

    junit = ET.parse(out / "junit.xml").getroot()
    assert (junit.tag, junit.get("tests"), junit.get("failures")) == ("testsuites", "3", "1")
    assert [s.get("name") for s in junit.iter("testsuite")] == ["pytest (shard-1)", "pytest (shard-2)"]
    assert len(list(junit.iter("testcase"))) == 3

    html = (out / "report.html").read_text()
    assert html.index(PROBES) < html.index(PAIRING)  # failures first
    assert "FAIL max_gap_ms: 5120 &gt; 4000" in html and "PASS downtime_ms" not in html
    assert "known QEMU bug, fixed in 10.1" in html
    assert '<table class="harness-migrations">' in html
    for link in (f"shards/shard-1/artifacts/{safe_name(PROBES)}/src-console.log", "shards/shard-2/report.html"):
        assert link.rsplit("/", 1)[0] in html and (out / link).is_file(), link


def test_merging_again_into_the_same_directory_replaces_the_earlier_merge(shards: list[Path], tmp_path: Path) -> None:
    merge_reports(shards, tmp_path / "merged")
    (tmp_path / "merged" / "shards" / "shard-2" / "stale").write_text("x")
    assert len(merge_reports(shards, tmp_path / "merged")["tests"]) == 3
    assert not (tmp_path / "merged" / "shards" / "shard-2" / "stale").exists()


def test_a_case_in_two_shards_is_refused_and_nothing_written(shards: list[Path], tmp_path: Path) -> None:
    twice = _write_shard(tmp_path / "c", [_entry(PAIRING, "failed")], 1, 1020.0)
    with pytest.raises(ConfigError, match=r"test_pairing_error_is_recognised\[two-primaries\] ran in shard-1 and "
                                          r"in shard-3"):
        merge_reports([*shards, twice], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_shards_of_different_setups_are_refused_naming_what_differs(shards: list[Path], tmp_path: Path) -> None:
    other = _write_shard(tmp_path / "c", [_entry("testcases/x.py::test_y", "passed")], 0, 1020.0,
                         config={**CONFIG, "qemu_binary": "/opt/qemu-9.2/bin/qemu-system-x86_64"})
    with pytest.raises(ConfigError, match=r"different setups \(qemu_binary: shard-1 'qemu-system-x86_64', shard-3 "
                                          r"'/opt/qemu-9.2/bin/qemu-system-x86_64'\)"):
        merge_reports([*shards, other], tmp_path / "merged")


def test_what_is_not_a_shard_is_named_with_the_fix(shards: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inside\\) a shard's directory"):
        merge_reports(shards[1:], shards[1] / "merged")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"--merge .*empty: no results.json in it; give the --reports directories"):
        merge_reports([shards[0], tmp_path / "empty"], tmp_path / "merged")
    (shards[1] / "results.json").write_text('{"schema": 1')
    with pytest.raises(ConfigError, match="results.json is not JSON"):
        merge_reports(shards, tmp_path / "merged")
    (shards[1] / "results.json").write_text("[]")
    with pytest.raises(ConfigError, match="schema None, this harness merges schema 2"):
        merge_reports(shards, tmp_path / "merged")
    old = json.loads((shards[0] / "results.json").read_text()) | {"schema": 1}
    (shards[0] / "results.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="schema 1, this harness merges schema 2"):
        merge_reports(shards[:1], tmp_path / "merged")
    assert not (tmp_path / "merged").exists() and not (shards[1] / "merged").exists()


@pytest.mark.parametrize(("statuses", "merged"), [
    ([0, 0], 0), ([0, 1], 1), ([1, 2], 2), ([0, 5], 0), ([5, 5], 5), ([5, 1], 1)])
def test_the_run_exits_with_its_gravest_shard_and_an_empty_shard_is_no_failure(statuses: list[int],
                                                                               merged: int) -> None:
    assert merged_exit_status(statuses) == merged


def test_the_command_prints_every_case_with_its_shard(shards: list[Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--merge", *map(str, shards), "--reports", str(tmp_path / "merged")]) == 0
    out = capsys.readouterr().out
    assert "exit status 1: 1 failed, 1 flaky, 1 passed, 1 xfailed" in out
    assert f"{PROBES}  (shard-1)" in out and "FAIL max_gap_ms: 5120 > 4000" in out
    assert "merged 2 shard(s)" in out
