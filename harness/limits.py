"""Limits derived from measurements: a soak's distributions and healthy suite runs' largest values.

Each limit is ``max(SOAK_MARGIN x the soak's p99, SUITE_MARGIN x the largest value a case of the
suite runs that applies its check and passed showed)``, rounded up to 10, and never below its floor. The soak
gives the spread of one migration repeated; the suite adds what its heavier cases (memory
dirtying, two pairs, native hotplug) reach and the soak does not. A case counts for a limit
only if it applies the check the limit feeds (``check.<prefix><name>`` in its results), so a
case on a deliberately broken guest, which judges other things, never loosens a limit.

Pure functions of ``results.json`` documents (one of ``failover-harness soak``, any number of
``failover-harness run``); ``failover-harness limits`` prints what they give.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config import Thresholds
from harness.errors import ConfigError
from harness.stats import Distribution, distribution

SOAK_MARGIN = 3.0  # x the soak's p99
SUITE_MARGIN = 1.5  # x the largest value a healthy suite case showed
ROUND_TO = 10


@dataclass(frozen=True)
class LimitSource:
    """Where the measurements behind one :class:`~harness.config.Thresholds` field come from."""

    limit: str  # the Thresholds field
    metric: str  # a soak sample's key; in a suite case, the metric (or phase figure) under its prefix
    check: str  # the check that compares the metric against the limit
    recorded_under: Literal["metrics", "migration_phases"] = "metrics"
    over_downtime: bool = False  # the limit is on the metric minus QEMU's downtime_ms
    floor: float = 0.0  # never below this (what the measurement itself cannot resolve)
    ceiling: float = math.inf  # never above this (a percentage's 100)


SOURCES = (
    LimitSource("max_probes_lost", "probes_lost", "probes_lost"),
    LimitSource("max_gap_ms", "max_gap_ms", "max_gap_ms"),
    LimitSource("max_switch_to_standby_ms", "switch_to_standby_ms", "switch_to_standby_ms"),
    LimitSource("max_failback_ms", "failback_ms", "failback_ms"),
    LimitSource("max_source_standby_gap_ms", "source_standby.max_gap_ms", "standby_carried_on_source",
                "migration_phases"),
    LimitSource("stop_copy_tolerance_ms", "stop_copy_outage_ms", "stop_copy_outage_within_downtime",
                over_downtime=True),
    LimitSource("max_destination_standby_gap_ms", "destination_standby.max_gap_ms", "standby_carried_on_destination",
                "migration_phases"),
    # A phase's first and last probes fall on either side of its edges as the guest's clock sync
    # places them (within about 26 ms): a few percent of a short phase, whatever the standby does.
    LimitSource("max_source_standby_scattered_loss_pct", "source_standby.scattered_loss_pct",
                "standby_carried_on_source", "migration_phases", floor=10.0, ceiling=100.0),
    LimitSource("max_destination_standby_scattered_loss_pct", "destination_standby.scattered_loss_pct",
                "standby_carried_on_destination", "migration_phases", floor=10.0, ceiling=100.0),
    # The guest's registration is placed on the host clock within about 26 ms (its clock sync).
    LimitSource("max_primary_coming_up_ms", "primary_coming_up.max_gap_ms", "primary_took_over", "migration_phases",
                floor=50.0),
    LimitSource("max_gap_after_restore_ms", "after_restore.max_gap_ms", "no_outage_after_restore", "migration_phases"),
)


@dataclass(frozen=True)
class DerivedLimit:
    source: LimitSource
    soak: Distribution | None
    largest: float | None  # the suite's largest value, and which case (and hop) showed it
    largest_case: str | None
    current: float  # the limit in effect (the defaults, or a profile's)

    @property
    def value(self) -> float | None:
        """The derived limit; None when neither the soak nor the suite measured it."""
        candidates = [*([SOAK_MARGIN * self.soak.p99] if self.soak else []),
                      *([SUITE_MARGIN * self.largest] if self.largest is not None else [])]
        if not candidates:
            return None
        rounded = math.ceil(max(candidates) / ROUND_TO) * ROUND_TO
        return min(self.source.ceiling, max(self.source.floor, rounded))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _measured(figures: dict[str, Any], source: LimitSource, prefix: str = "",
              downtimes: dict[str, Any] | None = None, allowed_ms: float = 0.0) -> float | None:
    """*source*'s figure as its limit sees it: less QEMU's downtime (an over-downtime limit) and
    less what the case's allowance added to that limit (*allowed_ms*)."""
    value = _number(figures.get(prefix + source.metric))
    if value is None:
        return None
    if source.over_downtime:
        downtime = _number((downtimes if downtimes is not None else figures).get(prefix + "downtime_ms"))
        if downtime is None:
            return None
        value -= downtime
    return value - allowed_ms


def soak_samples(soak: dict[str, Any], path: str = "--soak") -> list[dict[str, Any]]:
    """The per-hop samples of a soak's results.json (``data.soak.samples`` of its one test)."""
    tests = soak["tests"]
    samples = tests[0].get("data", {}).get("soak", {}).get("samples") if len(tests) == 1 else None
    if not isinstance(samples, list):
        raise ConfigError(f"{path}: not a soak's results (no data.soak.samples in a single test): give the "
                          "results.json that failover-harness soak wrote")
    return samples


def soak_values(samples: list[dict[str, Any]], source: LimitSource) -> list[float]:
    """Every hop's value of *source*."""
    return [v for sample in samples if (v := _measured(sample, source)) is not None]


def suite_values(suite: dict[str, Any], source: LimitSource) -> list[tuple[str, float]]:
    """``(case, value)`` for every migration of the suite whose case passed and applies *source*'s check,
    less what the case's allowance added to the limit (``run.allowed_ms``: the check compares the rest
    with the limit); a multi-migration case's are named with their prefix (``test_ping_pong_migration hop2``).
    A case that failed, or an expected failure (a known bug, say a VF primary that never came back),
    shows what the limits must catch, not what a healthy migration does."""
    found = []
    for test in suite["tests"]:
        if test.get("outcome") != "passed":
            continue
        case = test["nodeid"].split("::")[-1]
        for check in test.get("checks", {}):
            if check != source.check and not check.endswith("." + source.check):
                continue
            prefix = check.removesuffix(source.check)
            allowed = _number(test.get("run", {}).get(prefix + "allowed_ms", {}).get(source.limit)) or 0.0
            value = _measured(test.get(source.recorded_under, {}), source, prefix, test.get("metrics", {}), allowed)
            if value is not None:
                found.append((f"{case} {prefix.rstrip('.')}".rstrip(), value))
    return found


def derive_limits(soak: list[dict[str, Any]] | None, suites: Sequence[dict[str, Any]],
                  current: Thresholds) -> list[DerivedLimit]:
    """Each limit of :data:`SOURCES` from a soak's samples (or None) and suite runs' results (the largest
    over all of them: one run's heavy cases vary from run to run), with the one in effect."""
    derived = []
    for source in SOURCES:
        values = [value for suite in suites for value in suite_values(suite, source)]
        case, largest = max(values, key=lambda cv: cv[1]) if values else (None, None)
        derived.append(DerivedLimit(source, distribution(soak_values(soak, source)) if soak else None,
                                    largest, case, float(getattr(current, source.limit))))
    return derived


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def limits_table(derived: list[DerivedLimit]) -> list[str]:
    """A Markdown table: per limit the soak's p50 and p99, the suite's largest, both margins, the
    derived limit and the one in effect."""
    lines = [f"| limit | soak p50 | soak p99 | suite's largest (case) | {SOAK_MARGIN:g} x p99 | "
             f"{SUITE_MARGIN:g} x largest | derived | in effect |", "|---|---|---|---|---|---|---|---|"]
    for d in derived:
        name = d.source.limit + (" (over downtime)" if d.source.over_downtime else "")
        largest = "-" if d.largest is None else f"{d.largest:.1f} ({d.largest_case})"
        lines.append(f"| `{name}` | {_cell(d.soak and d.soak.median)} | {_cell(d.soak and d.soak.p99)} | {largest} | "
                     f"{_cell(d.soak and SOAK_MARGIN * d.soak.p99)} | "
                     f"{_cell(None if d.largest is None else SUITE_MARGIN * d.largest)} | "
                     f"{'-' if d.value is None else f'{d.value:g}'}"
                     f"{f' (floor {d.source.floor:g})' if d.value == d.source.floor and d.source.floor else ''} | "
                     f"{d.current:g} |")
    return lines


def thresholds_toml(derived: list[DerivedLimit]) -> list[str]:
    """The derived limits as a profile's ``[thresholds]`` table (limits nothing measured left out)."""
    return ["[thresholds]", *(f"{d.source.limit} = {d.value:g}" for d in derived if d.value is not None)]


def load_results_json(path: Path, option: str) -> dict[str, Any]:
    """A results.json as a dict; a missing, unreadable or foreign file is a ConfigError naming *option*."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{option}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{option}: {path} is not a readable results.json ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list):
        raise ConfigError(f"{option}: {path} has no 'tests' list: give the results.json a run of the harness wrote")
    return doc
