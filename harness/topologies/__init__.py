"""Failover beds: what every topology hands a test.

A bed is a running source VM whose guest negotiated failover with the primary
enslaved, a way to start destinations, the traffic peer, and the control
channel. Tests use only :class:`FailoverBed`, never a topology's internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from harness.guest import Guest
from harness.migration import MigrationResult
from harness.netns import Addressing
from harness.traffic.probe import PathCapture
from harness.vm import VM


class FailoverBed(Protocol):
    addressing: Addressing
    source: VM
    guest: Guest

    def resume(self) -> None:
        """Start a source built paused (bed option ``paused``) and wait for its guest."""
        ...

    def start_destination(self, *, with_primary: bool = True) -> VM: ...

    def migrate(self, destination: VM) -> MigrationResult: ...

    def path_capture(self, log_path: Path) -> PathCapture:
        """Start recording which data path (``primary``/``standby``) carries each probe reply."""
        ...

    def peer_exec_prefix(self) -> list[str]: ...

    def peer_interface(self) -> str: ...

    def peer_mac(self) -> str: ...

    def teardown(self) -> None: ...
