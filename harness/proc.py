"""Running host commands: argv lists only, never a shell built from values."""

from __future__ import annotations

import logging
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
