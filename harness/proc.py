"""Running host commands: argv lists only, never a shell built from values."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess

from harness.errors import CommandFailed

log = logging.getLogger(__name__)


def run(argv: list[str], *, check: bool = True, timeout: float = 60.0, input: str | None = None) -> str:
    """Run *argv*, return its combined output; raise :class:`CommandFailed` on a non-zero exit."""
    log.debug("run: %s", " ".join(argv))
    proc = subprocess.run(
        argv,
        input=input,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stdout)
    return proc.stdout


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for long-lived children (QEMU, recorders): SIGKILL them when the harness dies.

    A SIGKILLed pytest or xdist worker runs no teardown; without this its QEMUs
    would run on. Kept across ``ip netns exec`` (it execs, no setuid involved).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
