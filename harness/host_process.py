"""A long-running program (a QEMU) started on a :class:`~harness.hosts.Host`, local or remote.

What :class:`~harness.vm.VM` needs of a process (:class:`~harness.vm.QemuProcess`)
when the process is not a child of the harness: the host runs one fixed
launcher script with the program's argv as its positional arguments (never a
shell line built from them), which starts the program detached from the
session that launched it and keeps three files beside it: its output
(``.log``), its pid and, once it ended, its exit status (``.rc``).

The harness reads those files through the host's commands. Once the program
has ended its output is copied out in full, the files named in *collect*
(e.g. the guest's console) too, and every file is removed from the host:
nothing stays behind there.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from harness.errors import HarnessError, VMError
from harness.hosts import Host

log = logging.getLogger(__name__)

# $1: the path prefix of its files; the rest: the program and its arguments. The program
# runs in a subshell that waits for it and writes its status; every descriptor of both
# is /dev/null or a file, so the launching session (an SSH channel) can end at once.
# .pid and .rc appear whole (renamed into place), never half written.
LAUNCHER = """f=$1; shift
rm -f "$f.pid" "$f.log" "$f.rc"
( "$@" > "$f.log" 2>&1 < /dev/null &
  echo $! > "$f.pid.new" && mv "$f.pid.new" "$f.pid"
  wait $!; echo $? > "$f.rc.new" && mv "$f.rc.new" "$f.rc" ) > /dev/null 2>&1 < /dev/null &
for i in $(seq 200); do [ -s "$f.pid" ] && break; sleep 0.05; done
cat "$f.pid"
"""
POLL_INTERVAL_S = 0.2
KILL_WAIT_S = 10.0


class HostProcess:
    """*argv* started on *host*, its files under the path prefix *files* there (e.g. ``/run/fohx/src``).

    Its output reaches *output* when asked (:meth:`sync_output`) and in full when it ends;
    *collect* maps more files on the host to local paths to copy them to when it ends.
    """

    def __init__(self, host: Host, files: str, argv: list[str], output: BinaryIO,
                 collect: dict[str, Path] | None = None) -> None:
        self.host, self._files, self._output = host, files, output
        self._collect = dict(collect or {})
        started = host.check(["sh", "-c", LAUNCHER, "launcher", files, *argv], f"starting {argv[0]}")
        if not started.strip().isdigit():
            raise VMError(f"host {host.name}: {argv[0]} did not start (the launcher said {started.strip()!r})")
        self.pid = int(started.split()[-1])
        self._status: int | None = None
        self._copied = 0  # bytes of its output already in *output*

    def sync_output(self) -> None:
        """Append what it printed since the last call to *output*; a host that is gone has nothing to add."""
        if self._status is not None:  # ended: the last of it was copied then
            return
        try:
            new = self.host.run(["tail", "-c", f"+{self._copied + 1}", f"{self._files}.log"])
        except HarnessError:
            return
        if new.rc != 0:  # its complaint is not the program's output
            return
        data = new.output.encode()
        self._output.write(data)
        self._output.flush()
        self._copied += len(data)

    def poll(self) -> int | None:
        if self._status is None:
            rc = self.host.run(["cat", f"{self._files}.rc"])
            if rc.rc == 0 and rc.output.strip():
                self.sync_output()
                self._status = int(rc.output.strip())
                self._collect_and_remove()
        return self._status

    def _collect_and_remove(self) -> None:
        for remote, local in self._collect.items():
            copied = self.host.run(["cat", remote], timeout=60.0)
            local.write_text(copied.output if copied.rc == 0 else f"(not copied from {self.host.name}: "
                                                                   f"{copied.output.strip()})\n")
        leftovers = [f"{self._files}.{suffix}" for suffix in ("log", "pid", "rc")] + list(self._collect)
        removed = self.host.run(["rm", "-f", "--", *leftovers])
        if removed.rc != 0:
            log.warning("host %s: removing %s: %s", self.host.name, leftovers, removed.output.strip())

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"{self._files} on {self.host.name}", timeout or 0.0)
            time.sleep(POLL_INTERVAL_S)
        return status

    def terminate(self, timeout: float = KILL_WAIT_S) -> int:
        """SIGTERM it (a capture flushes its file), SIGKILL it after *timeout*; its exit status."""
        if self.poll() is None:
            self.host.run(["kill", "-TERM", str(self.pid)])
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.wait()

    def kill(self) -> None:
        """SIGKILL it and wait for its status (its files are then collected and removed)."""
        if self.poll() is None:
            self.host.run(["kill", "-KILL", str(self.pid)])
        self.wait(KILL_WAIT_S)

    def peak_rss_mib(self) -> float | None:
        """Peak resident memory (VmHWM) while it runs."""
        out = self.host.run(["grep", "VmHWM", f"/proc/{self.pid}/status"]).output.split()
        return int(out[1]) / 1024 if len(out) > 1 and out[1].isdigit() else None
