"""A long-running program (a QEMU) started on a :class:`~harness.hosts.Host`, local or remote.

What :class:`~harness.vm.VM` needs of a process (:class:`~harness.vm.QemuProcess`)
when the process is not a child of the harness: the host runs one fixed
launcher script with the program's argv as its positional arguments (never a
shell line built from them), which starts the program detached from the
session that launched it and keeps three files beside it: its output
(``.log``), its pid and, once it ended, its exit status (``.rc``). A program
that is gone with no status written (its launcher died too: seen once in an L1
under TCG) has *vanished*: it counts as ended, and its files are collected.

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
from harness.vm import KILL_WAIT_S

log = logging.getLogger(__name__)

# $1: the path prefix of its files; the rest: the program and its arguments. The program
# runs in a subshell that waits for it and writes its status; every descriptor of both
# is /dev/null or a file, so the launching session (an SSH channel) can end at once.
# .pid and .rc are written by shell builtins in one write (readers wait for a non-empty
# file): nothing is exec'd once the program ended, so its status does not hang on one more
# program starting (an L1 runs them from its host's root over 9p).
LAUNCHER = """f=$1; shift
rm -f "$f.pid" "$f.log" "$f.rc"
( "$@" > "$f.log" 2>&1 < /dev/null &
  echo $! > "$f.pid"
  wait $!; echo $? > "$f.rc" ) > /dev/null 2>&1 < /dev/null &
for i in $(seq 200); do [ -s "$f.pid" ] && break; sleep 0.05; done
cat "$f.pid"
"""
# $1: the path prefix, $2: the pid. Its status if written, else whether it still runs.
STATUS = """if [ -s "$1.rc" ]; then cat "$1.rc"
elif kill -0 "$2" 2>/dev/null; then echo running
else echo gone; fi"""
POLL_INTERVAL_S = 0.2
# How long a program may be gone before its status is written (its launcher writes it at
# once) until it counts as vanished.
VANISH_GRACE_S = 2.0
# What :meth:`HostProcess.poll` says of a program that vanished (a shell's status is 0-255).
VANISHED = -1


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
        self._gone_since: float | None = None
        self._copied = 0  # bytes of its output already in *output*

    @property
    def vanished(self) -> bool:
        """Whether it ended with no status written (see the module's docstring)."""
        return self._status == VANISHED

    def sync_output(self) -> None:
        """Append what it printed since the last call to *output*; a host that is gone has nothing to add."""
        if self._status is None:  # once it ended, the last of it was copied then
            self._copy_new_output()

    def _copy_new_output(self) -> None:
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
        """None while it runs; else its exit status, or :data:`VANISHED`."""
        if self._status is not None:
            return self._status
        said = self.host.run(["sh", "-c", STATUS, "status", self._files, str(self.pid)])
        answer = said.output.strip() if said.rc == 0 else ""
        if answer.isdigit():
            self._status = int(answer)
        elif answer == "gone":
            self._gone_since = self._gone_since or time.monotonic()
            if time.monotonic() - self._gone_since >= VANISH_GRACE_S:
                log.warning("host %s: %s (pid %d) is gone and left no exit status", self.host.name,
                            self._files, self.pid)
                self._status = VANISHED
        if self._status is not None:
            self._copy_new_output()
            self._collect_and_remove()
        return self._status

    def end_reason(self) -> str | None:
        """None while it runs; else how it ended."""
        status = self.poll()
        if status is None:
            return None
        return f"vanished from {self.host.name} with no exit status" if status == VANISHED else f"exited with {status}"

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
        """SIGKILL it and wait for its status (its files are then collected and removed).

        Raises :class:`~harness.errors.VMError` if it does not end (stuck in its host's kernel)."""
        if self.poll() is None:
            self.host.run(["kill", "-KILL", str(self.pid)])
        try:
            self.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            raise VMError(f"host {self.host.name}: {self._files} (pid {self.pid}) did not end within "
                          f"{KILL_WAIT_S:.0f} s of SIGKILL") from None

    def peak_rss_mib(self) -> float | None:
        """Peak resident memory (VmHWM) while it runs."""
        out = self.host.run(["grep", "VmHWM", f"/proc/{self.pid}/status"]).output.split()
        return int(out[1]) / 1024 if len(out) > 1 and out[1].isdigit() else None
