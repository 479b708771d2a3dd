"""A cgroup with a CPU quota, for a QEMU made slower on purpose (the ``half-cpu`` wrapper)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

CGROUP_ENV = "FAILOVER_HARNESS_CPU_CGROUP"
_PERIOD_US = 100_000


@contextmanager
def cpu_quota_cgroup(fraction: float) -> Iterator[Path]:
    """A cgroup whose processes together get *fraction* of one CPU, named in the environment for
    the wrapper (children inherit it); removed afterwards, any process still in it moved out first."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    root = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/cpu")
    group = root / f"failover-harness-cpu-{os.getpid()}"
    group.mkdir()
    quota = int(_PERIOD_US * fraction)
    try:
        if v2:
            (group / "cpu.max").write_text(f"{quota} {_PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        os.environ[CGROUP_ENV] = str(group)
        yield group
    finally:
        os.environ.pop(CGROUP_ENV, None)
        for pid in (group / "cgroup.procs").read_text().split():
            with suppress(ProcessLookupError, OSError):  # gone meanwhile
                (root / "cgroup.procs").write_text(pid)
        group.rmdir()
