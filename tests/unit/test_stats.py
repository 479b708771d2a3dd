"""Soak distributions: nearest-rank percentiles, gaps in the samples."""

from __future__ import annotations

from harness.stats import distribution, distributions, percentile


def test_nearest_rank_percentile_is_a_measured_value() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.95) == 95
    assert percentile([3.0, 1.0, 2.0], 0.95) == 3.0
    assert percentile([7.0], 0.5) == 7.0


def test_distribution() -> None:
    d = distribution([10.0, 30.0, 20.0, 40.0])
    assert d is not None
    assert (d.count, d.min, d.median, d.p95, d.p99, d.max) == (4, 10.0, 25.0, 40.0, 40.0, 40.0)
    assert d.line(" ms") == "n=4 min 10 ms median 25 ms p95 40 ms p99 40 ms max 40 ms"
    hundred = distribution([float(v) for v in range(1, 101)])
    assert hundred is not None and (hundred.p95, hundred.p99) == (95.0, 99.0)
    assert distribution([]) is None


def test_distributions_skip_missing_and_non_numeric() -> None:
    samples = [{"failback_ms": 1100.0, "final_path": "primary", "switch_to_standby_ms": None, "lost": 3},
               {"failback_ms": 2100.0, "final_path": "primary", "switch_to_standby_ms": 12.5, "lost": True}]
    got = distributions(samples)
    assert set(got) == {"failback_ms", "switch_to_standby_ms", "lost"}
    assert got["failback_ms"].median == 1600.0 and got["switch_to_standby_ms"].count == 1
    assert got["lost"].count == 1  # a bool is not a count
