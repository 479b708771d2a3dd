"""Claiming a lab's failover pairs and sharing its peer's address, with real flocks in tmp_path (in this
process, as two xdist workers' claims are, and in another process that is then killed)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import CapabilityMissing, ConfigError
from harness.lab.inventory import Inventory, load_inventory, parse_inventory
from harness.lab.pairs import SharedPeerAddress, check_workers, claim_pair
from tests.unit.test_inventory import SAMPLE_PATH, with_pairs

TWO_PAIRS = parse_inventory(with_pairs(), "lab.toml")

# Another process: claims a pair of the two-pair inventory, says which, and holds it until killed.
HOLDER = """
import sys, time
from pathlib import Path
from harness.lab.pairs import claim_pair
from tests.unit.test_lab_pairs import TWO_PAIRS
claim = claim_pair(TWO_PAIRS, Path(sys.argv[1]), "pid of the holder")
print(claim.pair.name, flush=True)
time.sleep(600)
"""

# Another process: a bed that finds the peer's address missing, adds it, and uses it until killed.
PEER_USER = """
import sys, time
from pathlib import Path
from harness.lab.pairs import SharedPeerAddress
from tests.unit.test_lab_pairs import TWO_PAIRS
SharedPeerAddress(Path(sys.argv[1]), TWO_PAIRS.peer).join(lambda: False, lambda: print("added", flush=True))
time.sleep(600)
"""


def test_two_workers_get_different_pairs_and_a_third_finds_every_pair_taken(tmp_path: Path) -> None:
    first = claim_pair(TWO_PAIRS, tmp_path, "pid 1 (xdist worker gw0)")
    second = claim_pair(TWO_PAIRS, tmp_path, "pid 2 (xdist worker gw1)")
    assert (first.pair.name, second.pair.name) == ("ab", "ba")
    assert first.host_keys == ("hv1.lab.example_22", "hv2.lab.example_22")
    with pytest.raises(CapabilityMissing, match=r"^every failover pair of the inventory is in use \(ab: pid 1 "
                                                r"\(xdist worker gw0\); ba: pid 2 \(xdist worker gw1\)\): let that "
                                                r"run finish"):
        claim_pair(TWO_PAIRS, tmp_path, "pid 3")
    first.release()
    first.release()  # safe twice
    assert claim_pair(TWO_PAIRS, tmp_path, "pid 3").pair.name == "ab"


def test_more_workers_than_pairs_is_a_usage_error_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"^-n 3: 3 xdist workers, but the inventory has 2 failover pair\(s\) "
                                          r"\(ab, ba\), one per worker: run with -n 2, or add \[pairs.<name>\]"):
        check_workers(TWO_PAIRS, 3)
    check_workers(TWO_PAIRS, 2)


def test_a_vf_another_inventory_claimed_is_not_taken_again(tmp_path: Path) -> None:
    """The sample's one pair (src's first VF to dst's) shares its VFs with the two-pair inventory's ab."""
    sample = load_inventory(SAMPLE_PATH)
    held = claim_pair(sample, tmp_path, "pid 1")
    assert claim_pair(TWO_PAIRS, tmp_path, "pid 2").pair.name == "ba"
    held.release()


def test_a_killed_holders_pair_is_free_again(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ab"
        assert claim_pair(TWO_PAIRS, tmp_path, "pid 2").pair.name == "ba"
        with pytest.raises(CapabilityMissing, match=r"ab: pid of the holder;"):
            claim_pair(TWO_PAIRS, tmp_path, "pid 3")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert claim_pair(TWO_PAIRS, tmp_path, "pid 3").pair.name == "ab"


class Address:
    """The peer's address as the beds see it: present or not; what they did to it."""

    def __init__(self, present: bool) -> None:
        self.present = present
        self.actions: list[str] = []

    def add(self) -> None:
        self.present = True
        self.actions.append("add")

    def remove(self) -> None:
        self.present = False
        self.actions.append("remove")


@contextlib.contextmanager
def _bed_killed_after(lock_dir: Path) -> Iterator[None]:
    """Another process's bed that added the peer's address (:data:`PEER_USER`), killed (no teardown)
    when the block ends."""
    killed = subprocess.Popen([sys.executable, "-c", PEER_USER, str(lock_dir)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    try:
        assert killed.stdout is not None
        assert killed.stdout.readline().strip() == "added"
        yield
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()


def _users(inventory: Inventory, lock_dir: Path, n: int) -> list[SharedPeerAddress]:
    return [SharedPeerAddress(lock_dir, inventory.peer) for _ in range(n)]


def test_the_first_bed_adds_the_peers_address_and_the_last_to_leave_removes_it(tmp_path: Path) -> None:
    address = Address(present=False)
    a, b = _users(TWO_PAIRS, tmp_path, 2)
    a.join(lambda: address.present, address.add)
    b.join(lambda: address.present, address.add)
    a.leave(address.remove)
    assert address.actions == ["add"] and address.present  # b still uses it
    b.leave(address.remove)
    b.leave(address.remove)  # safe twice
    assert address.actions == ["add", "remove"]


def test_an_address_the_lab_gave_the_peer_stays(tmp_path: Path) -> None:
    address = Address(present=True)
    (a,) = _users(TWO_PAIRS, tmp_path, 1)
    a.join(lambda: address.present, address.add)
    a.leave(address.remove)
    assert address.actions == [] and address.present


def test_an_address_a_killed_run_added_is_removed_when_the_last_live_bed_leaves(tmp_path: Path) -> None:
    """Another process's bed adds the address and is killed (no teardown); a bed here that used it too
    removes it when it leaves, as the last user."""
    address = Address(present=False)
    with _bed_killed_after(tmp_path):
        address.present = True
        (here,) = _users(TWO_PAIRS, tmp_path, 1)
        here.join(lambda: address.present, address.add)
    here.leave(address.remove)
    assert address.actions == ["remove"]


def test_the_sweep_leaves_an_address_a_live_bed_uses_and_removes_it_once_none_does(tmp_path: Path) -> None:
    """A killed run's note takes the peer's address away (failover-harness sweep --inventory): while a
    live bed of another run uses it, the sweep leaves it, and that bed removes it as it leaves; with no
    bed left, the sweep removes it."""
    address = Address(present=False)
    with _bed_killed_after(tmp_path):
        address.present = True
        live_bed, sweep = _users(TWO_PAIRS, tmp_path, 2)
        live_bed.join(lambda: address.present, address.add)
    assert not sweep.sweep(address.remove) and address.present
    live_bed.leave(address.remove)
    assert address.actions == ["remove"] and not address.present
    assert not sweep.sweep(address.remove)  # gone, and no bed's mark says to take it away again

    with _bed_killed_after(tmp_path):
        address.present = True
    assert sweep.sweep(address.remove) and address.actions == ["remove", "remove"]
