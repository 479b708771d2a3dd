"""The lab sweep: which scratch directories are a dead run's, the undo notes' order, and a sweep on this
machine (a LocalHost, a scratch root under tmp) that kills the listed program, replays the notes and
leaves a live run's directory alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from harness.hosts import LocalHost
from harness.lab.pairs import SharedPeerAddress
from harness.lab.sweep import (
    OWNER_FILE,
    PEER_ADDRESS_NOTE,
    UNDO_FILE,
    is_stale,
    owner_record,
    parse_undo,
    sweep_host,
    undo_lines,
)
from harness.netns import pid_alive
from tests.unit.test_lab_pairs import TWO_PAIRS


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_directory_is_stale_only_if_its_owner_ran_here_and_is_gone() -> None:
    dead = json.dumps({"machine": "m1", "pid": 4242})
    assert is_stale(dead, "m1", alive=lambda pid: False)
    assert not is_stale(dead, "m1", alive=lambda pid: True)
    assert not is_stale(dead, "m2", alive=lambda pid: False)  # another machine's run: not ours to judge
    for unreadable in ("", "{", '{"machine": "m1"}', "[1]"):
        assert not is_stale(unreadable, "m1", alive=lambda pid: False)
    assert json.loads(owner_record()) == {"machine": socket.gethostname(), "pid": os.getpid()}


def test_undo_notes_replay_last_first_and_skip_a_torn_line() -> None:
    text = undo_lines([{"vf": {"address": "0000:01:10.0"}}, {"argv": ["ip", "link", "del", "t1"]}]) + '{"argv": ["x'
    assert parse_undo(text) == [{"argv": ["ip", "link", "del", "t1"]}, {"vf": {"address": "0000:01:10.0"}}]


def test_a_sweep_undoes_a_dead_runs_directory_and_leaves_a_live_ones(tmp_path: Path) -> None:
    machine = socket.gethostname()
    dead, live = tmp_path / "fohxdead0src", tmp_path / "fohxlive0src"
    marker = tmp_path / "changed-by-the-run"
    marker.touch()
    program = subprocess.Popen(["sleep", "600"])
    try:
        dead.mkdir()
        (dead / OWNER_FILE).write_text(json.dumps({"machine": machine, "pid": _dead_pid()}))
        (dead / f"{program.pid}.pid").write_text(f"{program.pid}\n")
        (dead / UNDO_FILE).write_text(undo_lines([{"argv": ["rm", "-f", str(marker)]}]))
        live.mkdir()
        (live / OWNER_FILE).write_text(owner_record())
        done = sweep_host(LocalHost("local"), root=str(tmp_path))
        program.wait(10)
    finally:
        program.kill()
    assert done == [f"local: {dead}"]
    assert program.returncode == -9 and not pid_alive(program.pid)
    assert not marker.exists() and not dead.exists()
    assert (live / OWNER_FILE).exists()


def test_a_dead_runs_note_taking_the_peers_address_waits_for_the_live_beds(tmp_path: Path) -> None:
    """The note that takes the peer's address away is replayed through the shared address: left while a
    live bed (here, of another run on this machine) uses it."""
    address = tmp_path / "the-peers-address"
    address.touch()
    added_by_the_dead_run = SharedPeerAddress(tmp_path / "claims", TWO_PAIRS.peer)
    added_by_the_dead_run.join(lambda: False, lambda: None)
    live_bed = SharedPeerAddress(tmp_path / "claims", TWO_PAIRS.peer)
    live_bed.join(lambda: True, lambda: None)
    added_by_the_dead_run.leave(lambda: None)  # as its death does: it no longer holds the address
    dead = tmp_path / "scratch" / "fohxdead0src"
    dead.mkdir(parents=True)
    (dead / OWNER_FILE).write_text(json.dumps({"machine": socket.gethostname(), "pid": _dead_pid()}))
    (dead / UNDO_FILE).write_text(undo_lines([{"argv": ["rm", "-f", str(address)], PEER_ADDRESS_NOTE: True}]))
    sweep = SharedPeerAddress(tmp_path / "claims", TWO_PAIRS.peer)
    assert sweep_host(LocalHost("local"), root=str(dead.parent), peer_address=sweep) == [f"local: {dead}"]
    assert address.exists() and not dead.exists()
    live_bed.leave(lambda: address.unlink())
    assert not address.exists()
