"""What the plugin keeps on pytest's config and items (``stash``): the keys, shared by its modules and
:mod:`harness.plugin.rerun`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.config import RunConfig
from harness.snapshot import SnapshotStore

if TYPE_CHECKING:
    from harness.lab.pairs import PairClaim  # the lab's: imported by the host topology only
    from harness.topologies.host import LabSession

CONFIG_KEY = pytest.StashKey[RunConfig]()
PHASE_REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
ARTIFACTS_KEY = pytest.StashKey[Path]()
BED_ALLOWS_KEY = pytest.StashKey[list[str]]()
SNAPSHOTS_KEY = pytest.StashKey[SnapshotStore]()
LAB_KEY: pytest.StashKey[LabSession] = pytest.StashKey()
# The lab pair this process claimed for its session (harness.lab.pairs), released at its end.
PAIR_CLAIM_KEY: pytest.StashKey[PairClaim] = pytest.StashKey()
# The exception that failed the running attempt first (kept on the item, not the report:
# reports travel to the xdist controller, exceptions cannot); set by harness.plugin.rerun.
FAILURE_KEY = pytest.StashKey[BaseException | None]()
# Why the attempt's failure was the emulated hardware's, as the bed judged it at teardown.
EMULATION_FAULT_KEY = pytest.StashKey[str | None]()
