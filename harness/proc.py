"""Running host commands: argv lists only, never a shell built from values."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

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


def call_passing_signals(argv: list[str], stdout: IO[str] | None = None) -> int:
    """Run *argv* to its end (its output to *stdout*, default ours); a SIGINT or SIGTERM to this
    process reaches it exactly once.

    The child runs in a session of its own, so a terminal's Ctrl-C reaches it only through
    this process, never twice (a second one would cut pytest's teardown short); and this
    process waits for that teardown. ``subprocess.call`` would SIGKILL the child on Ctrl-C,
    leaving its bed's namespaces behind.
    """
    child = subprocess.Popen(argv, start_new_session=True, stdout=stdout,
                             stderr=subprocess.STDOUT if stdout is not None else None)
    with signals_passed_to(child):
        return child.wait()


@contextmanager
def signals_passed_to(child: subprocess.Popen[Any], first_only: bool = False) -> Iterator[None]:
    """While inside, a SIGINT or SIGTERM to this process goes to *child* (started with
    ``start_new_session=True``, see :func:`call_passing_signals`) instead of stopping this one;
    with *first_only*, only the first: for a caller that is stopped twice in a row (avocado's
    runner on Ctrl-C: the terminal's SIGINT, then the job's SIGTERM), where the second would cut
    the child's teardown short."""
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if first_only and forwarded:
            log.debug("signal %d not passed on: %d was", signum, forwarded[0])
            return
        forwarded.append(signum)
        child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
