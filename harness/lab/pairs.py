"""Which failover pair of the lab a run uses, and what the pairs of one lab share.

Each xdist worker (or a run without xdist) claims one pair of the inventory
(:attr:`~harness.lab.inventory.Inventory.failover_pairs`) for its whole session
(:func:`claim_pair`): an exclusive ``flock`` on a lock file per VF of the pair,
in the harness's cache directory. So two workers, or two runs of this machine,
never drive one VF at once, whichever inventories name it; the kernel drops
the locks of a process that dies however it dies. A worker that finds no free
pair does not wait (it would wait out another run's whole session): the case
is skipped, or fails under ``--require-resources``, naming who holds each pair.
More workers than pairs is a usage error before any worker starts (:func:`check_workers`).

The pairs share the traffic peer: its address is added by the first bed that
finds it missing and taken away by the last bed to leave (:class:`SharedPeerAddress`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import CapabilityMissing, ConfigError
from harness.lab.inventory import HostSpec, Inventory, Pair, PeerSpec

log = logging.getLogger(__name__)

CLAIMS_DIR = "lab-claims"  # under the cache directory


def _file_safe(text: str) -> str:
    """*text* as part of a lock file's name."""
    return re.sub(r"[^A-Za-z0-9.:_-]", "_", text)


def host_key(spec: HostSpec) -> str:
    """A file-name-safe key of a lab host as this machine reaches it (several inventories may name it)."""
    return _file_safe(spec.address if spec.is_local else f"{spec.address}_{spec.port}")


def vf_lock_path(lock_dir: Path, spec: HostSpec, vf: str) -> Path:
    return lock_dir / f"vf-{host_key(spec)}-{vf}.lock"


def check_workers(inventory: Inventory, workers: int) -> None:
    """ConfigError if a run's *workers* (``-n``) outnumber the inventory's pairs: one pair per worker."""
    pairs = inventory.failover_pairs
    if workers > len(pairs):
        raise ConfigError(f"-n {workers}: {workers} xdist workers, but the inventory has {len(pairs)} failover "
                          f"pair(s) ({', '.join(p.name for p in pairs)}), one per worker: run with -n {len(pairs)}, "
                          "or add [pairs.<name>] to the inventory (docs/lab.md)")


def claimant() -> str:
    """Who holds a claim, as another run's message names it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return (f"pid {os.getpid()}" + (f" (xdist worker {worker})" if worker else "")
            + f" since {time.strftime('%H:%M:%S')}")


@dataclass
class PairClaim:
    """A pair this process holds; :meth:`release` (or the process's end) frees it. *host_keys*: its hosts'
    :func:`host_key`."""

    pair: Pair
    host_keys: tuple[str, ...]
    _fds: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing drops the flock


def _try_lock(paths: list[Path], who: str) -> tuple[list[int], str]:
    """Exclusive locks on all *paths*, each then saying *who* holds it: ``(fds, "")``; or none and what
    holds the first busy one: ``([], holder)``."""
    fds: list[int] = []
    for path in paths:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            for taken in (*fds, fd):
                os.close(taken)
            return [], holder
        fds.append(fd)
    for fd in fds:
        os.ftruncate(fd, 0)
        os.pwrite(fd, who.encode(), 0)
    return fds, ""


def claim_pair(inventory: Inventory, lock_dir: Path, who: str) -> PairClaim:
    """The first pair of *inventory* none of whose VFs another claim holds; CapabilityMissing, naming each
    holder, if every pair is taken."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    busy = []
    for pair in inventory.failover_pairs:
        paths = [vf_lock_path(lock_dir, inventory.hosts[end.host], end.vf) for end in pair.ends]
        fds, holder = _try_lock(paths, who)
        if fds:
            log.info("claimed pair %s", pair)
            return PairClaim(pair, tuple(host_key(inventory.hosts[name]) for name in pair.hosts), fds)
        busy.append(f"{pair.name}: {holder}")
    raise CapabilityMissing(f"every failover pair of the inventory is in use ({'; '.join(busy)}): let that run "
                            "finish, or give this one pairs of its own")


@dataclass
class SharedPeerAddress:
    """The peer's address, which every bed of the lab (each worker's) needs while it lives: added by the
    first that finds it missing, removed by the last to leave if a bed added it (a mark file says so, and
    survives a killed run, so the next run's last bed still removes it).

    Each bed holds a shared lock on the users file while it uses the address; joining and leaving are
    serialised by a mutex file, and the last to leave is the one that gets the users file exclusively."""

    lock_dir: Path
    peer: PeerSpec
    _share: int | None = field(default=None, init=False)

    def _path(self, what: str) -> Path:
        where = _file_safe(f"{self.peer.host}-{self.peer.namespace or ''}-{self.peer.interface}-{self.peer.address}")
        return self.lock_dir / f"peer-{where}.{what}"

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path("mutex"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def join(self, present: Callable[[], bool], add: Callable[[], object]) -> None:
        """Use the address; *add* it if not *present*."""
        with self._mutex():
            share = os.open(self._path("users"), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(share, fcntl.LOCK_SH)  # only a leaver holds it exclusively, inside the mutex
            self._share = share
            if not present():
                self._path("added").touch()  # first: a run killed right after adding still has it removed
                add()

    def leave(self, remove: Callable[[], object]) -> None:
        """Stop using the address; *remove* it if no bed uses it any more and a bed added it. Safe twice."""
        if self._share is None:
            return
        with self._mutex():
            os.close(self._share)
            self._share = None
            self._remove_if_unused(remove)

    def sweep(self, remove: Callable[[], object]) -> bool:
        """For the lab sweep, replaying a killed run's note: *remove* the address unless a live bed uses it
        (the last of those removes it as it leaves: the mark file says a bed added it); whether it did."""
        with self._mutex():
            return self._remove_if_unused(remove)

    def _remove_if_unused(self, remove: Callable[[], object]) -> bool:
        """Inside the mutex: *remove* the address if no bed holds the users file and a bed added it."""
        fd = os.open(self._path("users"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a bed still uses it
        finally:
            os.close(fd)
        if not self._path("added").exists():
            return False
        remove()
        self._path("added").unlink()
        return True
