"""Driving a migration and following its states, with the harness's own deadlines.

QEMU has no timeout on ``wait-unplug``: a guest that never ejects its primary
holds the migration there forever. The harness imposes one, cancels, and says
so in the result. A paused source (``stop`` before ``migrate``, as ``virsh
save`` of a paused domain does) cannot eject at all: the harness tells that
hang by the source's run state within a second and cancels, naming the cause.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import DeadlineExceeded, VMError
from harness.vm import VM

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
# How the harness words a migration it cancelled because the source sat paused in
# wait-unplug (cases match it as the known bug's symptom).
PAUSED_IN_WAIT_UNPLUG = "held in wait-unplug while the VM is paused"
# The source must stay paused this long in wait-unplug to count as held there (a QEMU
# that runs the guest for its unplug resumes it at once); polled this often.
PAUSED_HOLD_S = 1.0
PAUSED_POLL_S = 0.25


@dataclass
class MigrationResult:
    status: str
    states: list[str]
    started: float
    ended: float
    query: dict[str, Any] = field(default_factory=dict)
    cancel_reason: str | None = None
    cancel_issued: float | None = None  # host time of the harness's own migrate_cancel


# Called once, the first time the source reports that MIGRATION status, with
# (source, destination): how cases inject a fault at a chosen point (cancel in
# wait-unplug, kill the destination while active).
StatusHook = Callable[[VM, VM], None]
# The destination's primary: as on the source, left out, or one QEMU cannot create.
DestinationPrimary = Literal["same", "absent", "unrealizable"]


@dataclass(frozen=True)
class MigrationPlan:
    """How a case wants its migration driven; the default is a plain migration."""

    on_status: Mapping[str, StatusHook] = field(default_factory=dict)
    # bytes/s: stretches the ``active`` phase so that a hook reliably finds it.
    max_bandwidth: int | None = None
    # Migration capabilities to turn on at both ends, e.g. ``auto-converge``, ``postcopy-ram``,
    # ``multifd`` (the last two must be on at both).
    capabilities: tuple[str, ...] = ()
    # Migration parameters to set at both ends, e.g. ``{"multifd-channels": 2}``.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # Overrides the configured threshold, for cases that expect the deadline to hit.
    wait_unplug_deadline_s: float | None = None
    destination_primary: DestinationPrimary = "same"
    # How long to wait for the primary afterwards (default: the configured
    # threshold); cases that expect none need not wait it out.
    restore_deadline_s: float | None = None
    # ``stop`` the source first: a stopped guest cannot eject its primary.
    pause_source: bool = False
    # Save the source to a file, then restore the destination from it (``virsh save``/``restore``),
    # instead of streaming; only a bed whose destination can read the source's files can.
    through_file: bool = False


PLAIN_MIGRATION = MigrationPlan()


def set_capabilities(vm: VM, *names: str) -> None:
    """Turn migration capabilities on (``events`` always: MIGRATION events exist only with it)."""
    vm.qmp.execute("migrate-set-capabilities",
                   {"capabilities": [{"capability": name, "state": True} for name in ("events", *names)]})


def restore_from_file(vm: VM, path: Path, timeout: float) -> str:
    """Load *vm* (started with ``-incoming defer``) from the migration stream saved in *path*; the final status."""
    mark = vm.qmp.mark()
    vm.qmp.execute("migrate-incoming", {"uri": f"file:{path}"})
    return wait_migration_end(vm, mark, timeout)


def wait_migration_end(vm: VM, after: int, timeout: float) -> str:
    """Wait until *vm*'s migration (outgoing or incoming) ends; its final status.

    A QEMU that exits meanwhile (an incoming migration that fails makes QEMU
    exit unless told otherwise) raises :class:`VMError` quoting its last words.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, event = vm.qmp.next_event("MIGRATION", 0.5, after=after,
                                         match=lambda e: e.data.get("status") in ("completed", "failed", "cancelled"))
            return str(event.data["status"])
        except DeadlineExceeded:
            ended = vm.exit_status()
            if ended is not None:
                said = " | ".join(vm.messages()[-3:]) or "nothing"
                raise VMError(f"{vm.name}: QEMU {ended} during the migration; it said: {said}") from None
            if time.monotonic() >= deadline:
                raise


def migrate(
    source: VM, destination: VM, uri: str, *, deadline_s: float, wait_unplug_deadline_s: float,
    on_status: Mapping[str, StatusHook] | None = None, max_bandwidth: int | None = None,
    capabilities: tuple[str, ...] = (), parameters: Mapping[str, Any] | None = None,
    saved_to: Path | None = None,
) -> MigrationResult:
    """Migrate *source* to *destination* (started with ``-incoming defer``) over *uri*.

    With *saved_to*, *uri* is that file: the source saves itself there, and once it completed the
    destination restores from it (the result's status is then the restore's).
    """
    src, dst = source.qmp, destination.qmp
    assert src is not None and dst is not None
    for vm in (source, destination):
        set_capabilities(vm, *capabilities)
        if parameters:
            vm.qmp.execute("migrate-set-parameters", dict(parameters))
    restore_bandwidth = None
    if max_bandwidth is not None:  # restored afterwards: a retry on this source runs at full speed
        restore_bandwidth = src.execute("query-migrate-parameters")["max-bandwidth"]
        src.execute("migrate-set-parameters", {"max-bandwidth": max_bandwidth})
    if saved_to is None:
        dst.execute("migrate-incoming", {"uri": uri})
    hooks = dict(on_status or {})
    mark = src.mark()
    started = time.time()
    src.execute("migrate", {"uri": uri})
    states: list[str] = []
    cancel_reason: str | None = None
    cancel_issued: float | None = None
    deadline = time.monotonic() + deadline_s
    unplug_deadline: float | None = None
    paused_since: float | None = None
    position = mark
    while True:
        now = time.monotonic()
        in_unplug = bool(states) and states[-1] == "wait-unplug" and cancel_reason is None
        limit = min(deadline, unplug_deadline or deadline, now + PAUSED_POLL_S if in_unplug else deadline)
        try:
            index, event = src.next_event("MIGRATION", max(0.0, limit - now), after=position)
        except DeadlineExceeded:
            if cancel_reason is not None:
                raise  # the cancel itself did not finish in time
            now = time.monotonic()
            if in_unplug and now < min(deadline, unplug_deadline or deadline):
                paused = src.execute("query-status")["status"] == "paused"
                paused_since = (paused_since or now) if paused else None
                if paused_since is None or now - paused_since < PAUSED_HOLD_S:
                    continue
                cancel_reason = (f"migration {PAUSED_IN_WAIT_UNPLUG} (query-status: paused for "
                                 f"{now - paused_since:.1f} s): a paused guest cannot release its primary, and "
                                 "QEMU waits for it with no timeout")
            else:
                cancel_reason = (
                    f"source stayed in wait-unplug longer than {wait_unplug_deadline_s:.0f} s (guest never ejected)"
                    if in_unplug else f"migration did not finish within {deadline_s:.0f} s"
                )
            log.warning("%s: cancelling: %s", source.name, cancel_reason)
            cancel_issued = time.time()
            src.execute("migrate_cancel")
            # After a cancel during an unplug QEMU waits up to 30 s for the eject.
            deadline = time.monotonic() + 60.0
            unplug_deadline = None
            continue
        position = index + 1
        status = event.data["status"]
        states.append(status)
        hook = hooks.pop(status, None)
        if hook is not None:
            log.info("%s: migration %s: running the case's hook", source.name, status)
            hook(source, destination)
        if status == "wait-unplug" and cancel_reason is None:
            unplug_deadline = time.monotonic() + wait_unplug_deadline_s
        elif unplug_deadline is not None:
            unplug_deadline = None
        if status in TERMINAL_STATES:
            break
    query = src.execute("query-migrate")
    if restore_bandwidth is not None:
        src.execute("migrate-set-parameters", {"max-bandwidth": restore_bandwidth})
    status = states[-1]
    if saved_to is not None and status == "completed":
        try:
            status = restore_from_file(destination, saved_to, max(1.0, deadline - time.monotonic()))
        except (VMError, DeadlineExceeded) as e:  # a restore that fails is the result, not a harness error
            status, query = "failed", {**query, "error-desc": f"restoring from {saved_to}: {e}"}
    return MigrationResult(status=status, states=states, started=started, ended=time.time(),
                           query=query, cancel_reason=cancel_reason, cancel_issued=cancel_issued)
