"""results.json stays small: raw timelines go to compressed files beside it, linked from each test."""

from __future__ import annotations

import gzip
import json

import pytest

from harness.report import load_test_data

CASES = """
    import json
    from harness.report import record_timeline
    from harness.timeline import Timeline

    def test_with_a_timeline(record_property):
        timeline = Timeline("src", "dst", 0.0, 1.0)
        record_timeline(record_property, timeline)
        record_timeline(record_property, timeline, name="timeline_retry")
        record_property("data.soak", json.dumps({"samples": [{"downtime_ms": 80}]}))
        record_property("metric.downtime_ms", 80)
"""


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_timelines_are_linked_files_and_other_data_stays_inline(pytester: pytest.Pytester,
                                                                 workers: tuple[str, ...]) -> None:
    pytester.makepyfile(test_cases=CASES)
    stale = pytester.path / "out" / "results-timelines" / "stale.json.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-json=out/results.json", *workers)
    result.assert_outcomes(passed=1)
    path = pytester.path / "out" / "results.json"
    (test,) = json.loads(path.read_text())["tests"]
    assert test["metrics"] == {"downtime_ms": 80}
    assert test["data"] == {"soak": {"samples": [{"downtime_ms": 80}]}}  # small: inline
    assert test["data_files"] == {
        "timeline": "results-timelines/test_cases.py_test_with_a_timeline.timeline.json.gz",
        "timeline_retry": "results-timelines/test_cases.py_test_with_a_timeline.timeline_retry.json.gz"}
    with gzip.open(path.parent / test["data_files"]["timeline"], "rt") as f:
        assert json.load(f) == load_test_data(path, test, "timeline_retry")
    assert "events" in load_test_data(path, test, "timeline")
    assert not stale.exists()  # a previous run's timelines are not left unlinked
