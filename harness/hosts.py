"""Where commands run: the :class:`Host` protocol and the local machine.

Every kind of host takes an argv list, never a shell line: :class:`LocalHost`
hands it to ``execve`` directly; the lab's :class:`~harness.lab.ssh.SSHHost`
(the same :class:`ArgvHost` base, in the lab package so that paramiko loads
only for lab runs) sends ``shlex.join(argv)`` so the remote login shell sees
every element as one literal word.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from harness.errors import DeadlineExceeded, HostCommandFailed
from harness.guest import CommandResult

log = logging.getLogger(__name__)

# Longer than any migration downtime: a command must not time out because the
# host's network paused while a guest moved (the management link is not the
# path under test, but it may share a switch with it).
COMMAND_TIMEOUT_S = 60.0


class Host(Protocol):
    """A machine the harness runs commands on; what topologies and tests type against."""

    name: str

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT_S, input: str | None = None) -> CommandResult:
        """Run *argv*; exit status and combined stdout+stderr. Raises DeadlineExceeded past *timeout*."""
        ...

    def check(self, argv: list[str], what: str, timeout: float = COMMAND_TIMEOUT_S,
              input: str | None = None) -> str:
        """Run *argv* and return its output; a non-zero exit raises HostCommandFailed saying *what* failed."""
        ...

    def read_file(self, path: str) -> str: ...

    def write_file(self, path: str, text: str) -> None: ...

    def close(self) -> None:
        """Release the connection, if any; idempotent."""
        ...


class ArgvHost(ABC):
    """What both kinds of host build on :meth:`run`, so they fail alike (same errors, same messages)."""

    name: str

    @abstractmethod
    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT_S, input: str | None = None) -> CommandResult:
        """Run *argv*; exit status and combined stdout+stderr. Raises DeadlineExceeded past *timeout*."""

    def check(self, argv: list[str], what: str, timeout: float = COMMAND_TIMEOUT_S,
              input: str | None = None) -> str:
        """The output of *argv*; a non-zero exit raises HostCommandFailed naming the host and *what*."""
        result = self.run(argv, timeout=timeout, input=input)
        if result.rc != 0:
            raise HostCommandFailed(self.name, what, argv, result.rc, result.output)
        return result.output

    def read_file(self, path: str) -> str:
        """Through :meth:`run` like everything else: the same errors on every kind of host."""
        return self.check(["cat", "--", path], f"reading {path}")

    def write_file(self, path: str, text: str) -> None:
        """Replace *path*'s content with *text* (tee: also what writing a sysfs attribute takes)."""
        self.check(["tee", "--", path], f"writing {path}", input=text)

    def take_file(self, path: str, what: str, timeout: float = COMMAND_TIMEOUT_S) -> bytes:
        """*path*'s bytes (as base64: commands carry text), removing it from the host, read or not."""
        try:
            return base64.b64decode(self.check(["base64", "-w", "0", "--", path], what, timeout=timeout))
        finally:
            self.run(["rm", "-f", "--", path])

    @abstractmethod
    def close(self) -> None:
        """Release the connection, if any; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _deadline(self, argv: list[str], timeout: float, output: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"host {self.name}: {shlex.join(argv)} did not finish within {timeout:g} s "
                                f"(stopped it); output so far: {output.strip()[-2000:]!r}")


@dataclass
class LocalHost(ArgvHost):
    """The machine the harness runs on."""

    name: str = "local"

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT_S, input: str | None = None) -> CommandResult:
        log.debug("%s: run %s", self.name, shlex.join(argv))
        try:
            # Its own process group: a timeout kills the command's children too.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", start_new_session=True)
        except OSError as e:  # what a remote shell reports as exit 127/126: a failed command, not a crash
            return CommandResult(127 if isinstance(e, FileNotFoundError) else 126, f"{argv[0]}: {e.strerror}")
        try:
            output, _ = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise self._deadline(argv, timeout, proc.communicate()[0]) from None
        except BaseException:
            _kill_group(proc)
            raise
        return CommandResult(proc.returncode, output)

    def put_file(self, local: Path, remote: str) -> None:
        """Copy *local* to *remote* (its mode too)."""
        shutil.copyfile(local, remote)
        shutil.copymode(local, remote)

    def close(self) -> None:
        """Nothing to release: each command is its own process."""


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
