"""The nested topology's path attribution: L0 sees every reply, the L1s name the standby's."""

from __future__ import annotations

from harness.metrics import PRIMARY, STANDBY
from harness.timeline import PathSeen
from harness.topologies.vfio import attribute_paths


def test_replies_an_l1_saw_on_the_standby_are_the_standbys_the_rest_the_vfs() -> None:
    seen = [PathSeen(1, 10.0, PRIMARY), PathSeen(2, 10.1, PRIMARY), PathSeen(3, 10.2, PRIMARY)]
    assert [p.path for p in attribute_paths(seen, {2, 99})] == [PRIMARY, STANDBY, PRIMARY]
    # L0's times stay: they are on the harness's clock, as the QMP events are.
    assert [p.t for p in attribute_paths(seen, {2})] == [10.0, 10.1, 10.2]


def test_no_standby_sighting_leaves_every_reply_on_the_vf() -> None:
    seen = [PathSeen(5, 1.0, PRIMARY)]
    assert attribute_paths(seen, set()) == seen
