"""The harness's exception hierarchy: one root, so callers can catch it whole."""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""


class ConfigError(HarnessError):
    """Bad user input: an option, a profile field or a path. Names the field and the fix."""


class CapabilityMissing(HarnessError):
    """The host lacks something a test needs (root, /dev/net/tun, QEMU >= 8.0, ...)."""


class CommandFailed(HarnessError):
    """A host command exited non-zero; keeps argv and output for the report."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output = output
        super().__init__(f"{' '.join(argv)!s} exited {returncode}: {output.strip()[-2000:]}")


class VMError(HarnessError):
    """A QEMU process failed to start, died, or did not answer in time."""


class GuestError(HarnessError):
    """The guest control channel failed or a guest command did not answer."""


class DeadlineExceeded(HarnessError):
    """A wait for an event or condition ran past its deadline."""
