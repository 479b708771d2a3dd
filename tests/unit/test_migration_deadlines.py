"""The harness's own limits on a migration (harness.migration.migrate), against a scripted QEMU."""

from __future__ import annotations

import time
from typing import Any, cast

from harness.errors import DeadlineExceeded
from harness.migration import PAUSED_HOLD_S, PAUSED_IN_WAIT_UNPLUG, migrate
from harness.timeline import QMPEvent
from harness.vm import VM


class ScriptedQMP:
    """A QEMU whose migration enters wait-unplug and stays there until cancelled (its VM *status*
    all along), then goes through cancelling to cancelled."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.events: list[QMPEvent] = []
        self.commands: list[str] = []

    def _migration(self, state: str) -> None:
        self.events.append(QMPEvent("src", "MIGRATION", {"status": state}, time.time()))

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        self.commands.append(command)
        if command == "migrate":
            for state in ("setup", "wait-unplug"):
                self._migration(state)
        elif command == "migrate_cancel":
            for state in ("cancelling", "cancelled"):
                self._migration(state)
        elif command == "query-status":
            return {"status": self.status}
        return {}

    def mark(self) -> int:
        return len(self.events)

    def next_event(self, name: str, timeout: float, *, after: int = 0) -> tuple[int, QMPEvent]:
        deadline = time.monotonic() + timeout
        while True:
            for index in range(after, len(self.events)):
                if self.events[index].name == name:
                    return index, self.events[index]
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"no {name} within {timeout:.1f} s")
            time.sleep(0.01)


class ScriptedVM:
    def __init__(self, status: str) -> None:
        self.name = "src"
        self.qmp = ScriptedQMP(status)


def _migrate(source: ScriptedVM, wait_unplug_deadline_s: float) -> tuple[Any, float]:
    started = time.monotonic()
    result = migrate(cast(VM, source), cast(VM, ScriptedVM("running")), "unix:/nowhere", deadline_s=60.0,
                     wait_unplug_deadline_s=wait_unplug_deadline_s)
    return result, time.monotonic() - started


def test_a_paused_source_in_wait_unplug_is_cancelled_at_once_naming_the_cause() -> None:
    result, took = _migrate(ScriptedVM("paused"), wait_unplug_deadline_s=30.0)
    assert result.status == "cancelled" and result.states == ["setup", "wait-unplug", "cancelling", "cancelled"]
    assert PAUSED_IN_WAIT_UNPLUG in (result.cancel_reason or "") and "query-status: paused" in result.cancel_reason
    assert PAUSED_HOLD_S <= took < PAUSED_HOLD_S + 1.0  # not the 30 s deadline


def test_a_running_source_in_wait_unplug_waits_for_the_deadline() -> None:
    source = ScriptedVM("running")
    result, took = _migrate(source, wait_unplug_deadline_s=1.0)
    assert result.status == "cancelled" and took >= 1.0
    assert result.cancel_reason == "source stayed in wait-unplug longer than 1 s (guest never ejected)"
    assert "query-status" in source.qmp.commands  # it was asked, and said running
