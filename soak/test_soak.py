"""Soak: one guest migrated back and forth many times under 1 kHz probes.

Not part of the conformance suite (it takes about ten seconds per migration
under TCG). Run it with ``failover-harness soak --migrations 100`` (or
``make soak``). Every hop is judged by the same checks as the probe case; the
case fails on any failed hop or any harness error, and reports each metric's
distribution (min/median/p95/p99/max) as ``metric.<name>.<stat>`` properties.
A passing hop's evidence is deleted at once (a hundred hops of probe logs
and captures would fill a disk); a failing hop's is kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness import progress
from harness.checks import CheckList
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.report import DATA_PREFIX
from harness.scenarios import measure_migration
from harness.stats import STATS, distributions
from harness.topologies import FailoverBed
from harness.verdicts import check_failover_ready, check_probes


def test_soak(failover_bed: FailoverBed, harness_config: RunConfig, test_artifacts: Path, record_property: Any,
              request: pytest.FixtureRequest) -> None:
    """Migrate back and forth --soak-migrations times: every hop passes its checks, no harness error."""
    migrations: int = request.config.option.soak_migrations
    checks = CheckList(record_property)
    check_failover_ready(failover_bed, harness_config, checks)
    samples: list[dict[str, object]] = []
    failed_hops: list[str] = []
    harness_errors: list[str] = []
    for hop in range(1, migrations + 1):
        hop_dir = test_artifacts / f"hop{hop:03d}"
        hop_dir.mkdir()
        hop_checks = CheckList()
        try:
            with progress.step(f"soak: migration {hop} of {migrations}"):
                run = measure_migration(failover_bed, harness_config, hop_dir)
        except HarnessError as e:
            harness_errors.append(f"hop {hop}: {type(e).__name__}: {e}")
            break  # the bed's state is unknown: later hops would measure the harness, not QEMU
        samples.append(run.metrics.scalars() | run.phases.figures())
        check_probes(run, harness_config.thresholds, hop_checks)
        if hop_checks.failed:
            failed_hops.append(f"hop {hop}: " + "; ".join(c.line() for c in hop_checks.failed))
        else:
            shutil.rmtree(hop_dir)
        if run.result.status != "completed":
            break
    stats = distributions(samples)
    for name, dist in stats.items():
        for stat in STATS:
            record_property(f"metric.{name}.{stat}", round(getattr(dist, stat), 3))
    record_property(f"{DATA_PREFIX}soak", json.dumps(  # results.json only
        {"failed_hops": failed_hops, "harness_errors": harness_errors, "samples": samples}))
    record_property("metric.migrations", len(samples))
    record_property("metric.harness_errors", len(harness_errors))
    checks.check("all_migrations_done", len(samples) == migrations, f"{len(samples)} of {migrations} migrations")
    checks.check("no_harness_error", not harness_errors, " | ".join(harness_errors) or "none")
    checks.check("every_hop_passed", not failed_hops,
                 f"{len(failed_hops)} hop(s) failed: {' | '.join(failed_hops[:5])}" if failed_hops
                 else f"all {len(samples)} hops passed every probe check")
    checks.verify()
