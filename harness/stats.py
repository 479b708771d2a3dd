"""Distributions of repeated measurements (the soak), as users read them: min, median, p95, p99, max; and
how likely a count of losses is at a given loss rate."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

# The statistics of a Distribution, in the order tables show them.
STATS = ("min", "median", "p95", "p99", "max")


# final: no subclass can define __bool__, so mypy knows `d and d.p99` is a float or None.
@final
@dataclass(frozen=True)
class Distribution:
    count: int
    min: float
    median: float
    p95: float
    p99: float  # a limit is set at a stated margin above it
    max: float

    def line(self, unit: str = "") -> str:
        return (f"n={self.count} min {self.min:g}{unit} median {self.median:g}{unit} "
                f"p95 {self.p95:g}{unit} p99 {self.p99:g}{unit} max {self.max:g}{unit}")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: a value that was measured, never an interpolation."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> Distribution | None:
    """None for no values (a metric no hop measured)."""
    if not values:
        return None
    return Distribution(len(values), min(values), statistics.median(values), percentile(values, 0.95),
                        percentile(values, 0.99), max(values))


def distributions(samples: Sequence[dict[str, object]]) -> dict[str, Distribution]:
    """Per numeric metric over all samples; missing and non-numeric values are left out."""
    names = sorted({k for s in samples for k, v in s.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    out = {}
    for name in names:
        values = [float(v) for s in samples if isinstance(v := s.get(name), int | float) and not isinstance(v, bool)]
        dist = distribution(values)
        if dist is not None:
            out[name] = dist
    return out


def binomial_tail(lost: int, sent: int, rate: float) -> float:
    """How likely at least *lost* of *sent* are lost when each is lost independently with probability
    *rate*: P(X >= lost) for X ~ Binomial(sent, rate). Summed in logarithms: a phase may send tens of
    thousands of probes, whose probabilities underflow a float."""
    if lost <= 0:
        return 1.0
    if lost > sent or rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    log_rate, log_kept, log_sent_factorial = math.log(rate), math.log1p(-rate), math.lgamma(sent + 1)
    terms = [log_sent_factorial - math.lgamma(k + 1) - math.lgamma(sent - k + 1) + k * log_rate
             + (sent - k) * log_kept for k in range(lost, sent + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))
