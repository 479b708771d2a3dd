"""Soak distributions: nearest-rank percentiles, gaps in the samples; the binomial tail of a loss count."""

from __future__ import annotations

import math

from harness.stats import binomial_tail, distribution, distributions, percentile


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


def test_binomial_tail_against_exact_sums_and_at_its_edges() -> None:
    exact = 1 - sum(math.comb(26, k) * 0.1 ** k * 0.9 ** (26 - k) for k in range(3))
    assert math.isclose(binomial_tail(3, 26, 0.1), exact, rel_tol=1e-12)  # the nested phase: 3 of 26
    assert math.isclose(binomial_tail(4, 4, 0.1), 1e-4, rel_tol=1e-12)
    assert binomial_tail(0, 10, 0.5) == 1.0  # nothing lost is always at least as likely
    assert binomial_tail(1, 10, 0.0) == 0.0  # a path that loses nothing never loses one
    assert binomial_tail(11, 10, 0.5) == 0.0
    assert binomial_tail(10, 10, 1.0) == 1.0
    # A postcopy phase's 24548 probes: no underflow, and 10.2 % at a 10 % rate is not rare.
    assert 0.1 < binomial_tail(2500, 24548, 0.1) < 0.3
    assert binomial_tail(24000, 24548, 0.1) == 0.0
