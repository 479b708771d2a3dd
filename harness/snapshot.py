"""Booted-guest snapshots: boot a guest configuration once, restore it for every case that needs it.

A snapshot is QEMU's own migration stream written to a file (``migrate
file:...``) from a guest that booted, negotiated failover and enslaved its
primary. Saving is a failover migration like any other: QEMU unplugs the
primary first, and a QEMU restoring the file (``migrate-incoming file:...``)
plugs it back, so the restored guest negotiates again and re-enslaves it, as
on a migration destination.

Snapshots live in the cache directory, keyed by everything that decides the
machine: the canonical QEMU command line (kernel and initrd paths carry the
image key), the QEMU binary's identity (path, size, mtime) and the
accelerator. Per-test paths (sockets, logs, tap names) are not part of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from filelock import FileLock

from harness.errors import HarnessError
from harness.vm import TapNetdev, VMPaths, VMSpec, build_argv


class SnapshotError(HarnessError):
    """Saving or restoring a snapshot failed; the bed boots its guest instead (a guest that cannot boot is not this)."""

# Canonical per-test parts, so that every test's source shares one snapshot.
_PLACEHOLDER_PATHS = VMPaths.for_vm("vm", Path("/run-dir"), Path("/artifacts"))


def qemu_identity(binary: str) -> dict[str, object]:
    """What changes when the QEMU under test changes (a rebuilt binary keeps its path, not its mtime)."""
    path = shutil.which(binary) or binary
    real = os.path.realpath(path)
    st = os.stat(real)
    return {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def snapshot_key(spec: VMSpec) -> str:
    canonical = replace(spec, name="vm", paused=False, incoming=False,
                        netdevs=tuple(TapNetdev(n.id, f"tap-{n.id}") for n in spec.netdevs))
    material = {"argv": build_argv(canonical, _PLACEHOLDER_PATHS), "qemu": qemu_identity(spec.qemu_binary)}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SnapshotStore:
    """Snapshot files under *directory*, created once across processes (xdist workers) under a lock.

    One store per run (per worker): a configuration whose snapshot failed is
    not tried again in that run (:attr:`failed`), every later case boots.
    """

    directory: Path
    failed: set[str] = field(default_factory=set, compare=False)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.mig"

    @contextmanager
    def creating(self, key: str) -> Iterator[Path | None]:
        """Hold the key's lock; yield a temporary path to write if the snapshot is missing, else None.

        Whatever is written there becomes the snapshot when the block ends without an error.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        with FileLock(str(final) + ".lock"):
            if final.exists():
                yield None
                return
            for stale in self.directory.glob(f"{key}.*.partial"):  # a saver killed mid-write (we hold the lock)
                stale.unlink(missing_ok=True)
            partial = final.with_suffix(f".{os.getpid()}.partial")
            try:
                yield partial
                os.replace(partial, final)
            finally:
                partial.unlink(missing_ok=True)

    def drop(self, key: str) -> None:
        """Remove a snapshot that failed to save or restore; this run boots that configuration from now on."""
        self.failed.add(key)
        with FileLock(str(self.path(key)) + ".lock"):
            self.path(key).unlink(missing_ok=True)
