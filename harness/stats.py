"""Distributions of repeated measurements (the soak), as users read them: min, median, p95, p99, max."""

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
