"""Timing isolation across xdist workers (and concurrent runs on one host).

Two TCG guests on a 2-core host slow each other down: a switch or fail-back
time measured beside another QEMU measures the neighbour. Cases marked
``timing`` take a host-wide lock exclusively, every other case that starts
QEMU takes it shared: non-timing cases run in parallel with each other, a
timing case runs with no other harness QEMU on the host. Each case records
how it ran (``run.isolation``).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal


@contextmanager
def timing_isolation(lock_paths: Sequence[Path], timing_case: bool,
                     mode: Literal["host", "shared"] = "host") -> Iterator[str]:
    """Hold the host-wide lock of each host the case's QEMUs run on (*lock_paths*: this machine's, or the
    lab hosts of a pair), exclusively for a timing case under *mode* ``host``, else shared (a run whose
    times are not judged, ``--timing-isolation shared``, lets its timing cases overlap the non-timing
    ones). Taken in one order, so that two cases never hold one each while waiting for the other's.
    Yields how the case runs, for the report."""
    exclusive = timing_case and mode == "host"
    fds = []
    try:
        started = time.monotonic()
        for path in sorted(lock_paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            fds.append(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
            fcntl.flock(fds[-1], fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        waited = time.monotonic() - started
        if exclusive:
            yield f"alone (timing case; waited {waited:.1f} s for other cases to finish)"
        else:
            yield (f"beside other non-timing cases (waited {waited:.1f} s)"
                   + (", a timing case (--timing-isolation shared: its times include the neighbours')"
                      if timing_case else ""))
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the flock
