"""Did a metric move between two sets of runs? The statistics of ``failover-harness compare``.

Pure functions on samples (lists of floats), tested on recorded values. Per metric:
the median of each side, the difference of the medians (candidate minus baseline) with a
bootstrap confidence interval, and a two-sided Mann-Whitney U test; the p-values of all the
metrics compared are adjusted together with Holm's step-down method. A metric is
``regressed`` or ``improved`` only when it is statistically significant (adjusted p below
alpha, and the interval excludes zero) *and* practically significant (the difference is at
least the larger of a relative and an absolute minimum); anything else is ``unchanged``,
or ``unknown`` when a side has too few samples to judge.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

Direction = Literal["lower", "higher"]  # which way is better
Verdict = Literal["regressed", "improved", "unchanged", "unknown"]

# Fewer samples than this on a side cannot be judged: with 3 against 3 the smallest two-sided
# Mann-Whitney p-value is 0.1, so nothing could ever be significant.
MIN_SAMPLES = 3
BOOTSTRAP_RESAMPLES = 4000
# The bootstrap resamples with this seed: the same samples always give the same interval.
BOOTSTRAP_SEED = 20261206


@dataclass(frozen=True)
class PracticalRule:
    """How big a difference must be to matter: at least *min_relative* of the baseline's median and
    at least the absolute minimum of the metric's unit (ms, probes, Mbit/s)."""

    min_relative: float = 0.10
    min_absolute: Mapping[str, float] = field(default_factory=lambda: {"ms": 10.0, "probes": 5.0, "Mbit/s": 5.0})
    alpha: float = 0.05
    confidence: float = 0.95

    def threshold(self, unit: str, baseline_median: float) -> float:
        return max(self.min_relative * abs(baseline_median), self.min_absolute.get(unit, 0.0))


@dataclass(frozen=True)
class MetricComparison:
    name: str
    unit: str
    better: Direction
    baseline: tuple[float, ...]
    candidate: tuple[float, ...]
    baseline_median: float | None
    candidate_median: float | None
    difference: float | None  # candidate median minus baseline median
    interval: tuple[float, float] | None  # of the difference, at the rule's confidence
    p_value: float | None  # Mann-Whitney U, two-sided, before adjustment
    p_adjusted: float | None = None  # Holm, over every metric judged together
    verdict: Verdict = "unknown"
    why: str = ""

    @property
    def relative(self) -> float | None:
        """The difference as a fraction of the baseline's median (None where that is 0 or unknown)."""
        if self.difference is None or not self.baseline_median:
            return None
        return self.difference / abs(self.baseline_median)


def median_difference_interval(baseline: Sequence[float], candidate: Sequence[float],
                               confidence: float) -> tuple[float, float]:
    """Bootstrap (percentile) interval of median(candidate) - median(baseline), each side resampled
    on its own. Percentile rather than BCa: BCa's jackknife breaks on the many ties of small integer
    samples (probes lost: 0, 0, 0, ...)."""
    import numpy as np  # here: scipy and numpy take a second to import, and only a comparison needs them
    from scipy import stats

    if len(set(baseline)) == 1 and len(set(candidate)) == 1:
        difference = candidate[0] - baseline[0]
        return difference, difference  # every resample gives the same value
    result = stats.bootstrap((np.asarray(baseline), np.asarray(candidate)),
                             lambda b, c, axis: np.median(c, axis=axis) - np.median(b, axis=axis),
                             confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                             vectorized=True, rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def rank_test(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value; 1.0 when every sample on both sides is the same value
    (scipy returns NaN there: nothing distinguishes the sides). With ties, the normal approximation
    with scipy's tie correction."""
    from scipy import stats

    if len(set(baseline) | set(candidate)) == 1:
        return 1.0
    # Exact where there are no ties (scipy's default goes asymptotic above 8 samples a side: 1.8e-4
    # instead of 1.1e-5 for 10 against 10 fully separated, too weak to survive Holm over ~100 metrics).
    method: Literal["exact", "asymptotic"] = (
        "exact" if len(set(baseline) | set(candidate)) == len(baseline) + len(candidate) else "asymptotic")
    p = float(stats.mannwhitneyu(baseline, candidate, alternative="two-sided", method=method).pvalue)
    return 1.0 if math.isnan(p) else p


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), kept
    monotone and at most 1. Controls the family-wise error rate over all the metrics compared."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def compare_metric(name: str, unit: str, better: Direction, baseline: Sequence[float],
                   candidate: Sequence[float], rule: PracticalRule) -> MetricComparison:
    """Medians, difference, interval and rank test of one metric (its verdict comes in :func:`judge`)."""
    base, cand = tuple(baseline), tuple(candidate)
    if len(base) < MIN_SAMPLES or len(cand) < MIN_SAMPLES:
        return MetricComparison(name, unit, better, base, cand,
                                statistics.median(base) if base else None, statistics.median(cand) if cand else None,
                                None, None, None, why=f"too few samples to judge ({len(base)} baseline, "
                                                      f"{len(cand)} candidate; at least {MIN_SAMPLES} each)")
    base_median, cand_median = statistics.median(base), statistics.median(cand)
    return MetricComparison(name, unit, better, base, cand, base_median, cand_median, cand_median - base_median,
                            median_difference_interval(base, cand, rule.confidence), rank_test(base, cand))


def judge(comparisons: Sequence[MetricComparison], rule: PracticalRule) -> list[MetricComparison]:
    """Adjust the p-values of the judgeable comparisons together (Holm) and give each its verdict."""
    judgeable = [c for c in comparisons if c.p_value is not None]
    adjusted = dict(zip((id(c) for c in judgeable), holm([c.p_value for c in judgeable if c.p_value is not None]),
                        strict=True))
    return [_verdict(c, adjusted[id(c)], rule) if id(c) in adjusted else c for c in comparisons]


def _verdict(c: MetricComparison, p_adjusted: float, rule: PracticalRule) -> MetricComparison:
    assert c.difference is not None and c.interval is not None and c.baseline_median is not None
    low, high = c.interval
    threshold = rule.threshold(c.unit, c.baseline_median)
    significant = p_adjusted < rule.alpha and (low > 0 or high < 0)
    large = abs(c.difference) >= threshold
    stated = (f"difference {c.difference:+.4g} {c.unit} ({rule.confidence:.0%} interval {low:+.4g} to {high:+.4g}), "
              f"p {p_adjusted:.2g} after Holm (alpha {rule.alpha:g}), minimum {threshold:.4g} {c.unit}")
    if not (significant and large):
        reason = "not significant" if not significant else "significant but smaller than the minimum"
        return replace(c, p_adjusted=p_adjusted, verdict="unchanged", why=f"{reason}: {stated}")
    worse = (c.difference > 0) == (c.better == "lower")
    return replace(c, p_adjusted=p_adjusted, verdict="regressed" if worse else "improved", why=stated)


def smallest_detectable_shift(pool: Sequence[float], runs: int, unit: str, better: Direction, rule: PracticalRule,
                              metrics_judged: int = 1, power: float = 0.8, trials: int = 100) -> float:
    """The smallest worsening a comparison of *runs* against *runs* flags as ``regressed`` with
    probability *power*, for a metric whose run-to-run spread is *pool* (e.g. an A/A comparison's
    samples, both sides): each trial draws both sides from *pool* with replacement and worsens the
    candidate's by the shift; *metrics_judged* stands for Holm's correction (as Bonferroni, its
    bound for the smallest p-value). Found by bisection (power grows with the shift)."""
    rng = random.Random(BOOTSTRAP_SEED)
    sign = 1.0 if better == "lower" else -1.0
    draws = [([rng.choice(pool) for _ in range(runs)], [rng.choice(pool) for _ in range(runs)]) for _ in range(trials)]

    def detected(shift: float) -> bool:
        flagged = 0
        for base, cand in draws:
            c = compare_metric("m", unit, better, base, [v + sign * shift for v in cand], rule)
            if c.p_value is not None and _verdict(c, min(1.0, c.p_value * metrics_judged), rule).verdict == "regressed":
                flagged += 1
        return flagged >= power * trials

    low, high = 0.0, rule.threshold(unit, statistics.median(pool)) + 3 * (max(pool) - min(pool)) + 1.0
    while not detected(high):
        high *= 2
    for _ in range(12):  # to 1/4096 of the first bracket: finer than any metric's resolution
        middle = (low + high) / 2
        low, high = (low, middle) if detected(middle) else (middle, high)
    return high
