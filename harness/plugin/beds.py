"""The bed: built through one factory for every topology (:func:`make_bed`), its module imported only
when the topology is chosen (:data:`harness.topologies.TOPOLOGIES`), torn down whatever happens."""

from __future__ import annotations

import atexit
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.accel import AccelChoice
from harness.config import RunConfig
from harness.errors import CapabilityMissing, ConfigError
from harness.image import GuestImage
from harness.isolation import timing_isolation
from harness.plugin.evidence import failed_so_far
from harness.plugin.fixtures import unavailable
from harness.plugin.keys import (
    BED_ALLOWS_KEY,
    CONFIG_KEY,
    EMULATION_FAULT_KEY,
    FAILURE_KEY,
    LAB_KEY,
    PAIR_CLAIM_KEY,
    SNAPSHOTS_KEY,
)
from harness.sweep import run_dir
from harness.topologies import FailoverBed, bed_class

_bed_counter = itertools.count(1)
_live_beds: set[FailoverBed] = set()


def _flat_options(request: pytest.FixtureRequest, run: RunConfig) -> dict[str, Any]:
    return {"snapshots": request.config.stash.get(SNAPSHOTS_KEY, None) if run.snapshots else None}


def _host_options(request: pytest.FixtureRequest, run: RunConfig) -> dict[str, Any]:
    """The inventory, the run's :class:`~harness.topologies.host.LabSession`, and the pair this process
    claimed on its first bed (held until the session ends: :func:`pytest_sessionfinish`)."""
    from harness.lab.inventory import load_inventory  # the lab package: only when the host topology is chosen
    from harness.lab.pairs import CLAIMS_DIR, claim_pair, claimant
    from harness.topologies.host import LabSession

    assert run.inventory is not None  # RunConfig requires it
    inventory = load_inventory(run.inventory)
    if PAIR_CLAIM_KEY not in request.config.stash:
        try:
            request.config.stash[PAIR_CLAIM_KEY] = claim_pair(inventory, run.cache_dir / CLAIMS_DIR, claimant())
        except CapabilityMissing as e:  # another run holds every pair
            unavailable(run, str(e))
    return {"inventory": inventory, "lab": request.config.stash.setdefault(LAB_KEY, LabSession()),
            "pair": request.config.stash[PAIR_CLAIM_KEY].pair}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Free the lab pair this process claimed, if it did (its end would, too), interrupted or not."""
    if (claim := session.config.stash.get(PAIR_CLAIM_KEY, None)) is not None:
        claim.release()
        del session.config.stash[PAIR_CLAIM_KEY]


def timing_locks(config: pytest.Config, run: RunConfig) -> list[Path]:
    """What a timing case must have to itself: this machine, where the QEMUs run; on the host topology
    the lab hosts of the claimed pair instead (another pair's guests on other hosts do not slow it)."""
    claim = config.stash.get(PAIR_CLAIM_KEY, None)
    if run.topology != "host" or claim is None:
        return [run.cache_dir / "timing.lock"]
    from harness.lab.pairs import CLAIMS_DIR

    return [run.cache_dir / CLAIMS_DIR / f"timing-{key}.lock" for key in claim.host_keys]


# What a topology's bed takes beyond what every bed does (harness.topologies.BedClass), from the session.
TOPOLOGY_OPTIONS: dict[str, Callable[[pytest.FixtureRequest, RunConfig], dict[str, Any]]] = {
    "flat": _flat_options,
    "host": _host_options,
}


def make_bed(request: pytest.FixtureRequest, run: RunConfig, image: GuestImage, accel: AccelChoice, tag: str,
             artifacts_dir: Path, options: dict[str, Any]) -> FailoverBed:
    """The one bed factory: the configured topology's bed class (:func:`~harness.topologies.bed_class`),
    given what every bed takes, the topology's own (:data:`TOPOLOGY_OPTIONS`) and the case's *options*."""
    own = TOPOLOGY_OPTIONS.get(run.topology)
    try:
        return bed_class(run.topology)(run, image, accel.accel, tag, run_dir=run_dir(os.getpid(), tag),
                                       artifacts_dir=artifacts_dir, **(own(request, run) if own else {}), **options)
    except ConfigError as e:  # an inventory that does not hold
        raise pytest.UsageError(f"failover-harness: {e}") from None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a case that needs what the topology cannot provide, before any fixture costs time."""
    needed = {c for marker in item.iter_markers("bed_needs") for c in marker.args}
    topology = item.config.stash[CONFIG_KEY].topology
    missing = sorted(needed - bed_class(topology).capabilities)
    if missing:
        pytest.skip(f"the {topology} topology cannot provide: {', '.join(missing)}")



def _teardown_live_beds() -> None:
    for bed in list(_live_beds):
        bed.teardown()


atexit.register(_teardown_live_beds)


@pytest.fixture
def failover_bed(request: pytest.FixtureRequest, harness_config: RunConfig, guest_image: GuestImage,
                 accel: AccelChoice, test_artifacts: Path, record_property: Any) -> Iterator[FailoverBed]:
    """A running source guest with failover negotiated, on the configured topology.

    Options by indirect parametrization, e.g.
    ``@pytest.mark.parametrize("failover_bed", [{"hotplug": "native"}], indirect=True)``;
    ``"build": False`` hands the test an unbuilt bed (cases that expect the build to fail).
    """
    options: dict[str, Any] = dict(getattr(request, "param", {}))
    build = options.pop("build", True)
    needed = {c for marker in request.node.iter_markers("bed_needs") for c in marker.args}
    missing = sorted(needed - bed_class(harness_config.topology).capabilities)
    if missing:
        pytest.skip(f"the {harness_config.topology} topology cannot provide: {', '.join(missing)}")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "m")
    tag = f"{worker}-{next(_bed_counter)}"
    record_property("run.accel", accel.accel)
    record_property("run.accel_reason", accel.reason)
    bed = make_bed(request, harness_config, guest_image, accel, tag, test_artifacts, options)
    _live_beds.add(bed)
    request.node.stash[BED_ALLOWS_KEY] = bed.expected_log_lines()
    timing = request.node.get_closest_marker("timing") is not None
    # Torn down inside the lock: the next timing case must find no QEMU of ours running.
    with timing_isolation(timing_locks(request.config, harness_config), timing,
                          harness_config.timing_isolation) as how:
        try:
            record_property("run.isolation", how)
            if build:
                try:
                    bed.build()
                except CapabilityMissing as e:  # e.g. an L1 without vfio-pci: what the machine lacks, not a failure
                    unavailable(harness_config, str(e))
            for name, value in bed.facts().items():  # a paused bed boots later, in the test
                if value is not None:
                    record_property(name, round(value, 2) if isinstance(value, float) else value)
            yield bed
            if failed_so_far(request.node):
                bed.save_guest_log(test_artifacts / "guest-dmesg.log")
        except Exception as e:  # the build's (a test's failure does not come back here)
            request.node.stash[FAILURE_KEY] = e
            raise
        finally:
            bed.teardown()
            _live_beds.discard(bed)
            if (failure := request.node.stash.get(FAILURE_KEY, None)) is not None:
                request.node.stash[EMULATION_FAULT_KEY] = bed.emulation_fault(failure)
            if (peak := bed.peak_rss_mib()) is not None:
                record_property("run.qemu_peak_rss_mib", round(peak, 1))
