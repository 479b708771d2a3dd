"""The nested topology's path attribution: L0 sees every reply, the L1s name the standby's."""

from __future__ import annotations

import time

import pytest

from harness.metrics import PRIMARY, STANDBY
from harness.timeline import PathSeen
from harness.topologies import vfio
from harness.topologies.vfio import attribute_paths


def test_replies_an_l1_saw_on_the_standby_are_the_standbys_the_rest_the_vfs() -> None:
    seen = [PathSeen(1, 10.0, PRIMARY), PathSeen(2, 10.1, PRIMARY), PathSeen(3, 10.2, PRIMARY)]
    assert [p.path for p in attribute_paths(seen, {2, 99})] == [PRIMARY, STANDBY, PRIMARY]
    # L0's times stay: they are on the harness's clock, as the QMP events are.
    assert [p.t for p in attribute_paths(seen, {2})] == [10.0, 10.1, 10.2]


def test_no_standby_sighting_leaves_every_reply_on_the_vf() -> None:
    seen = [PathSeen(5, 1.0, PRIMARY)]
    assert attribute_paths(seen, set()) == seen


class _Stops:
    """A capture that notes when it was told to stop."""

    def __init__(self, name: str, log: list[tuple[str, float]]) -> None:
        self.name, self.log = name, log

    def request_stop(self) -> None:
        self.log.append((self.name, time.monotonic()))


def test_the_hypervisors_captures_stop_a_drain_after_the_peers_and_only_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hypervisor's capture under TCG may lag: stopped with the peer's, it lost the last replies, which
    then counted as the VF's. It stops the drain later; a second stop request (the recorder's
    ``finally``) stops nothing again."""
    monkeypatch.setattr(vfio, "HYPERVISOR_CAPTURE_DRAIN_S", 0.05)
    log: list[tuple[str, float]] = []
    capture = vfio.HypervisorPathCapture(_Stops("peer", log), [_Stops("l1a", log), _Stops("l1b", log)])  # type: ignore[arg-type]
    capture.request_stop()
    capture.request_stop()
    assert [name for name, _ in log] == ["peer", "l1a", "l1b"]
    assert log[1][1] - log[0][1] >= 0.05
