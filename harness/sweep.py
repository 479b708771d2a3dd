"""Remove what harness runs that no longer exist left behind (a SIGKILLed pytest or xdist worker).

Everything a run creates carries its pid: namespaces ``fohx-<pid>-...`` (with
QEMU, recorders and iperf3 inside them) and run directories
``/tmp/fohx-<pid>-...`` (QMP, control and migration sockets). A name whose pid
is gone is a leftover.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from harness.netns import pid_alive, sweep_stale

log = logging.getLogger(__name__)

RUN_DIR_ROOT = Path("/tmp")
RUN_DIR_PREFIX = "fohx-"


def run_dir(pid: int, tag: str) -> Path:
    """Where a bed keeps its sockets; the pid makes it sweepable."""
    return RUN_DIR_ROOT / f"{RUN_DIR_PREFIX}{pid}-{tag}"


def sweep_leftovers() -> list[str]:
    """Remove namespaces (killing what runs in them) and run directories of dead runs; say what went."""
    removed = [f"namespace {name}" for name in sweep_stale()]
    for path in RUN_DIR_ROOT.glob(f"{RUN_DIR_PREFIX}*"):
        pid = path.name.removeprefix(RUN_DIR_PREFIX).split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"run dir {path}")
    for item in removed:
        log.warning("removed leftover %s", item)
    return removed
