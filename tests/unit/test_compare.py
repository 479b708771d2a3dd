"""failover-harness compare's logic on recorded results: samples, statistics, verdicts, reports, run order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.compare import compare
from harness.compare.judgement import PracticalRule, compare_metric, holm, judge, rank_test, smallest_detectable_shift
from harness.compare.report import as_json, render_html, terminal_table
from harness.compare.runner import CompareError, CompareSettings, RunRequest, SideSettings, run_order
from harness.compare.samples import CaseRecord, case_records, metric_kind, tally_checks
from harness.errors import ConfigError

RULE = PracticalRule()
PROBES = "testcases/test_migration.py::test_migration_with_failover_under_probes[acpi]"
IPERF = "testcases/test_migration.py::test_migration_with_failover_under_iperf3"


@pytest.fixture
def recorded(data_dir: Path) -> dict:
    """A healthy run of the two default cases (flat, TCG), its bulk data left out."""
    return json.loads((data_dir / "compare-results-flat-tcg.json").read_text())


def test_only_metrics_with_a_direction_are_judged() -> None:
    assert metric_kind("downtime_ms") == ("ms", "lower")
    assert metric_kind("throughput_after_resume_mbps") == ("Mbit/s", "higher")
    assert metric_kind("probes_lost") == ("probes", "lower")
    assert metric_kind("phase.destination_standby.max_gap_ms") == ("ms", "lower")
    assert metric_kind("phase.stop_copy.ms") == ("ms", "lower")
    assert metric_kind("phase.switch.lost_inbound") == ("probes", "lower")
    for undirected in ("probes_sent", "replies_on_primary", "release_before_unplug_end_ms", "phase.baseline.ms",
                       "phase.after_restore.ms", "phase.switch.replies_on_standby", "final_path"):
        assert metric_kind(undirected) is None, undirected


def test_a_run_gives_each_case_its_judged_metrics_and_checks(recorded: dict) -> None:
    records = case_records(recorded)
    assert set(records) == {PROBES, IPERF}
    probes = records[PROBES]
    assert probes.outcome == "passed" and all(probes.checks.values()) and "standby_carried_on_source" in probes.checks
    assert probes.metrics["downtime_ms"] == recorded["tests"][0]["metrics"]["downtime_ms"]
    assert "phase.stop_copy.max_gap_ms" in probes.metrics and "probes_sent" not in probes.metrics
    assert "throughput_after_resume_mbps" in records[IPERF].metrics


def test_holm_adjusts_step_down_and_stays_monotone() -> None:
    # m = 4: 0.01 * 4, 0.02 * 3, 0.03 * 2 and 0.04 * 1, kept monotone (0.06 -> 0.06, 0.04 -> 0.06).
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def test_the_rank_test_tells_separated_samples_from_the_same() -> None:
    assert rank_test([5.0] * 10, [5.0] * 10) == 1.0  # all ties: nothing tells the sides apart
    assert rank_test(list(range(10)), [x + 100.0 for x in range(10)]) == pytest.approx(2 / 184756)  # exact
    assert rank_test([1.0, 3.0, 5.0, 7.0], [2.0, 4.0, 6.0, 8.0]) > 0.5


def _judged(baseline: list[float], candidate: list[float], unit: str = "ms", better: str = "lower",
            rule: PracticalRule = RULE) -> str:
    (c,) = judge([compare_metric("m", unit, better, baseline, candidate, rule)], rule)  # type: ignore[arg-type]
    return c.verdict


def test_a_slower_candidate_regresses_and_a_faster_one_improves() -> None:
    base = [100.0, 104, 98, 101, 99, 103, 97, 102, 100, 101]
    slow = [v * 1.5 for v in base]
    assert _judged(base, slow) == "regressed"
    assert _judged(slow, base) == "improved"
    assert _judged(base, slow, unit="Mbit/s", better="higher") == "improved"  # more throughput is better


def test_a_difference_must_be_significant_and_large_enough() -> None:
    base = [100.0, 104, 98, 101, 99, 103, 97, 102, 100, 101]
    assert _judged(base, [v + 5 for v in base]) == "unchanged"  # 5 ms: below 10 % and below 10 ms
    noisy = [50.0, 150, 60, 140, 70, 130, 80, 120, 90, 110]
    assert _judged(noisy, [v + 12 for v in noisy]) == "unchanged"  # large enough, not significant
    assert _judged(base[:2], [v * 2 for v in base[:2]]) == "unknown"  # too few to judge
    strict = PracticalRule(min_relative=0.0, min_absolute={"ms": 0.0})
    assert _judged(base, [v + 5 for v in base], rule=strict) == "regressed"


def test_holm_counts_every_metric_judged_together() -> None:
    # 5 against 5 completely separated: p = 0.0079; alone it is significant, among 10 metrics not.
    base, cand = [100.0, 101, 102, 103, 104], [200.0, 201, 202, 203, 204]
    alone = judge([compare_metric("m", "ms", "lower", base, cand, RULE)], RULE)
    assert alone[0].verdict == "regressed"
    crowd = judge([compare_metric(f"m{i}", "ms", "lower", base, cand if i == 0 else base, RULE) for i in range(10)],
                  RULE)
    assert crowd[0].verdict == "unchanged" and crowd[0].p_adjusted == pytest.approx(0.079, abs=1e-3)


def test_a_check_that_passes_on_the_baseline_and_fails_on_the_candidate_broke() -> None:
    ok, bad = CaseRecord("passed", {}, {"c": True}), CaseRecord("failed", {}, {"c": False})
    tallies = {(t.case, t.check): t for t in tally_checks(
        [("baseline", {"x": ok}), ("candidate", {"x": bad}), ("baseline", {"x": ok}), ("candidate", {"x": bad}),
         ("baseline", {"x": ok}), ("candidate", {"x": ok})])}
    assert tallies[("x", "c")].change == "broke" and tallies[("x", "outcome")].change == "broke"
    once = tally_checks([("baseline", {"x": ok}), ("candidate", {"x": bad}), ("baseline", {"x": ok}),
                         ("candidate", {"x": ok}), ("baseline", {"x": ok}), ("candidate", {"x": ok})])
    assert all(t.change is None for t in once)  # one failure in three is not the candidate's verdict


def test_runs_alternate_baseline_first() -> None:
    assert run_order(2) == [(1, "baseline"), (2, "candidate"), (3, "baseline"), (4, "candidate")]


def _settings(tmp_path: Path, runs: int = 10) -> CompareSettings:
    return CompareSettings(SideSettings("qemu-a"), SideSettings("qemu-b"), tmp_path / "compare", tmp_path, runs=runs)


def _replay(recorded: dict, slowdown: float):  # type: ignore[no-untyped-def]
    """A runner that writes the recorded results, the candidate's times multiplied by *slowdown*
    and its probe case failing standby_carried_on_source."""
    def run(settings: CompareSettings, request: RunRequest) -> int:
        results = json.loads(json.dumps(recorded))
        wobble = 1 + 0.01 * request.number  # runs differ a little, as real ones do
        for test in results["tests"]:
            factor = wobble * (slowdown if request.side == "candidate" else 1.0)
            test["metrics"] = {k: v * factor if k.endswith("_ms") and isinstance(v, float | int) else v
                               for k, v in test["metrics"].items()}
            if request.side == "candidate" and test["nodeid"] == PROBES:
                test["checks"]["standby_carried_on_source"] = "FAIL standby_carried_on_source: <b>& 200 ms"
        request.results.write_text(json.dumps(results))
        return 0
    return run


def test_a_slowed_candidate_is_flagged_with_its_broken_check(tmp_path: Path, recorded: dict) -> None:
    comparison = compare(_settings(tmp_path), _replay(recorded, slowdown=2.0))
    assert comparison.exit_status == 1
    assert [t.check for t in comparison.broken_checks] == ["standby_carried_on_source"]
    regressed = {(m.case, m.comparison.name) for m in comparison.regressed}
    assert (PROBES, "total_time_ms") in regressed and (IPERF, "downtime_ms") in regressed
    assert not comparison.improved
    lines = terminal_table(comparison)
    assert lines[4].startswith("broke: test_migration_with_failover_under_probes[acpi] standby_carried_on_source")
    assert lines[-1].endswith("REGRESSED")
    document = as_json(comparison)
    total = next(m for m in document["metrics"] if m["case"] == PROBES and m["name"] == "total_time_ms")
    assert len(total["baseline"]) == 10 and total["verdict"] == "regressed" and total["interval"][0] > 0
    html = render_html(comparison)
    assert "<b>&" not in html and "REGRESSED" in html and html.count("<svg") > len(comparison.metrics)


def test_the_same_results_on_both_sides_flag_nothing(tmp_path: Path, recorded: dict) -> None:
    def same(settings: CompareSettings, request: RunRequest) -> int:
        request.results.write_text(json.dumps(recorded))
        return 1
    comparison = compare(_settings(tmp_path), same)
    assert comparison.exit_status == 0 and not comparison.changed_checks
    assert {m.comparison.verdict for m in comparison.metrics} == {"unchanged"}


@pytest.mark.parametrize(("status", "error", "message"), [
    (5, ConfigError, "-k 'x' selects no case"),
    (2, CompareError, "run 1 (baseline) did not run to its verdict: pytest exit status 2"),
])
def test_a_run_that_did_not_run_stops_the_comparison(tmp_path: Path, status: int, error: type[Exception],
                                                     message: str) -> None:
    settings = CompareSettings(SideSettings("a"), SideSettings("b"), tmp_path, tmp_path, runs=2, select="x")
    with pytest.raises(error, match=re.escape(message)):
        compare(settings, lambda s, r: status)


def test_bad_options_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--runs", "0", "--reports", str(tmp_path)]) == 1
    assert "--runs 0: give at least 1" in capsys.readouterr().err
    assert main(["compare", "--min-absolute", "ms:5", "--reports", str(tmp_path)]) == 1
    assert "--min-absolute 'ms:5': give UNIT=VALUE with UNIT one of ms, probes, Mbit/s" in capsys.readouterr().err
    assert main(["compare", "--candidate-guest-kernel", str(tmp_path / "nope"), "--reports", str(tmp_path)]) == 1
    assert f"--candidate-guest-kernel: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing written


def test_the_smallest_detectable_shift_follows_the_noise_and_the_practical_minimum() -> None:
    quiet = [250.0, 251, 249, 250, 252, 248, 250, 251, 249, 250]
    shift = smallest_detectable_shift(quiet, 10, "ms", "lower", RULE, trials=40)
    assert 25 <= shift <= 27  # the practical minimum (10 % of 250 ms) decides, not the noise
    noisy = [150.0, 350, 200, 300, 250, 180, 320, 220, 280, 260]
    assert smallest_detectable_shift(noisy, 10, "ms", "lower", RULE, trials=40) > 60
    fewer = smallest_detectable_shift(noisy, 5, "ms", "lower", RULE, trials=40)
    assert fewer > smallest_detectable_shift(noisy, 10, "ms", "lower", RULE, trials=40)
