"""failover-harness trend on recorded results: series over nights, the outlier rule, the page, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.compare.judgement import PracticalRule
from harness.trend import Run, build_series, spread

RULE = PracticalRule()
PROBES = "testcases/test_migration.py::test_migration_with_failover_under_probes[acpi]"
NIGHT = 86400.0


def _nights(tmp_path: Path, data_dir: Path, failbacks: list[float]) -> list[Path]:
    """One directory per night holding the recorded run's results.json, its probe case's fail-back set."""
    recorded = json.loads((data_dir / "compare-results-flat-tcg.json").read_text())
    dirs = []
    for night, failback in enumerate(failbacks):
        doc = json.loads(json.dumps(recorded))
        doc["started"] = 1.8e9 + night * NIGHT
        doc["tests"][0]["metrics"]["failback_ms"] = failback
        directory = tmp_path / f"night-{night:02d}"
        directory.mkdir()
        (directory / "results.json").write_text(json.dumps(doc))
        dirs.append(directory)
    return dirs


def test_the_band_is_robust_and_never_narrower_than_the_practical_minimum() -> None:
    assert spread([250.0] * 10, "ms", RULE) == (225.0, 275.0)  # no noise: 10 % of the median
    low, high = spread([200.0, 300, 210, 290, 250, 240, 260, 5000], "ms", RULE)  # one bad night barely widens it
    assert 0 < low < 200 and 300 < high < 500


def test_a_value_outside_the_earlier_runs_band_is_flagged_with_its_direction() -> None:
    values = [250.0, 255, 245, 252, 248, 251, 400, 100, 250]
    runs = [Run(Path(f"r{i}"), i * NIGHT, 0, {("c", "failback_ms"): v}) for i, v in enumerate(values)]
    runs.append(Run(Path("x"), 99 * NIGHT, 0, {("c", "probes_sent"): 5}))  # undirected: no series
    (series,) = build_series(list(reversed(runs)), RULE)  # in time order whatever the input order
    assert [p.value for p in series.points] == values
    assert [p.flag for p in series.points] == [None] * 6 + ["worse", "better", None]
    assert series.points[4].band is None and series.points[5].band is not None  # five earlier runs needed


def test_the_command_charts_every_night_and_fails_when_the_newest_is_worse(
        tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = _nights(tmp_path, data_dir, [250.0, 255, 245, 252, 248, 251, 900])
    out = tmp_path / "trend.html"
    assert main(["trend", str(tmp_path), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert text.startswith("7 runs, ")
    assert "worse  2027-01-" in text and "failback_ms 900 ms" in text and str(dirs[-1] / "results.json") in text
    assert "the newest run is worse on: test_migration_with_failover_under_probes[acpi] failback_ms" in text
    page = out.read_text()
    assert page.count("<svg") >= 7 and 'class="worse"' in page
    # Without the bad night nothing is flagged and the exit status is 0.
    assert main(["trend", *map(str, dirs[:-1]), "--out", str(out)]) == 0
    assert "nothing flagged" in capsys.readouterr().out


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trend", str(tmp_path / "nope")]) == 1
    assert f"trend: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert main(["trend", str(tmp_path)]) == 1
    assert f"trend: no results.json under {tmp_path}" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{}")
    assert main(["trend", str(tmp_path)]) == 1
    assert "not a results.json of failover-harness (KeyError: 'started')" in capsys.readouterr().err
