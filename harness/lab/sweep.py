"""What a killed run left on the lab hosts, found and undone: ``failover-harness sweep --inventory lab.toml``.

A host-topology bed keeps everything it puts on a host under a scratch
directory there (``/run/fohx/fohx*``): beside the files, who made it
(:data:`OWNER_FILE`: this machine's name and the harness's pid), the pid
files of the programs it started, and how to undo each change it made
(:data:`UNDO_FILE`, one JSON line per change, noted before the change: an
argv to run, or a VF to give back as it was). Teardown normally undoes all
of it; when the harness was killed outright, the sweep does, for every
directory whose owner ran on this machine and is gone: it kills the listed
programs, replays the undo notes last first, and removes the directory.
Directories of live runs, and of other machines' runs, are left alone.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.hosts import Host
from harness.jsonlines import json_records
from harness.lab.doctor import connect
from harness.lab.inventory import Inventory
from harness.lab.pairs import CLAIMS_DIR, SharedPeerAddress
from harness.netns import pid_alive
from harness.sriov.claims import VfClaims

log = logging.getLogger(__name__)

SCRATCH_ROOT = "/run/fohx"
SCRATCH_PREFIX = "fohx"
OWNER_FILE = "owner.json"
UNDO_FILE = "undo.jsonl"
# Marks the note that takes the peer's address away: other runs' beds may share that address
# (harness.lab.pairs.SharedPeerAddress), so the sweep replays it only when none uses it.
PEER_ADDRESS_NOTE = "peer_address"
# $1: a directory whose <pid>.pid files name processes still running.
KILL_LISTED = 'for f in "$1"/*.pid; do [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done; true'


def owner_record() -> str:
    """What :data:`OWNER_FILE` says of this harness process."""
    return json.dumps({"machine": socket.gethostname(), "pid": os.getpid()})


def undo_lines(entries: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(entry) + "\n" for entry in entries)


def is_stale(owner_text: str, machine: str, alive: Callable[[int], bool] = pid_alive) -> bool:
    """Whether a scratch directory's owner ran on *machine* and is gone (unreadable: not ours to judge). Pure
    but for *alive*."""
    try:
        owner = json.loads(owner_text)
        return bool(owner["machine"] == machine and not alive(int(owner["pid"])))
    except (ValueError, KeyError, TypeError):
        return False


def parse_undo(text: str) -> list[dict[str, Any]]:
    """The undo notes in the order to replay them (last noted first); torn lines skipped. Pure."""
    return [note for note in json_records(text) if "argv" in note or "vf" in note][::-1]


def sweep_host(host: Host, machine: str | None = None, root: str = SCRATCH_ROOT,
               peer_address: SharedPeerAddress | None = None) -> list[str]:
    """Undo what dead runs of *machine* (default: this one) left on *host* under *root*; what was undone.
    A note that takes the peer's address away goes through *peer_address* (left while a live bed uses it)."""
    machine = machine or socket.gethostname()
    listed = host.run(["ls", "-1", root])
    done = []
    for name in listed.output.split() if listed.rc == 0 else []:
        scratch = f"{root}/{name}"
        owner = host.run(["cat", f"{scratch}/{OWNER_FILE}"])
        if not name.startswith(SCRATCH_PREFIX) or owner.rc != 0 or not is_stale(owner.output, machine):
            continue
        host.run(["sh", "-c", KILL_LISTED, "kill-listed", scratch])
        for note in parse_undo(host.run(["cat", f"{scratch}/{UNDO_FILE}"]).output):
            try:
                argv = [str(arg) for arg in note.get("argv", ())]
                if "vf" in note:
                    VfClaims.restore_noted(host, note["vf"])
                elif note.get(PEER_ADDRESS_NOTE) and peer_address is not None:
                    peer_address.sweep(functools.partial(host.run, argv))
                else:
                    host.run(argv)
            except HarnessError as e:
                log.warning("%s: undoing %s: %s", host.name, note, e)
        host.run(["rm", "-rf", "--", scratch])
        done.append(f"{host.name}: {scratch}")
    return done


def sweep_inventory(inventory: Inventory, cache_dir: Path) -> list[str]:
    """:func:`sweep_host` on every inventory host (the peer's address shared as this machine's beds, whose
    claims are under *cache_dir*, share it); a host that cannot be reached is reported, not fatal."""
    peer_address = SharedPeerAddress(cache_dir / CLAIMS_DIR, inventory.peer)
    done = []
    for name, spec in inventory.hosts.items():
        host = connect(name, spec)
        try:
            done += sweep_host(host, peer_address=peer_address)
        except HarnessError as e:
            done.append(f"{name}: not swept: {e}")
        finally:
            host.close()
    return done
