"""The harness's exception hierarchy: one root, so callers can catch it whole.

::

    HarnessError
    ├── ConfigError            bad option, profile field, inventory or path (names the fix)
    ├── CapabilityMissing      the host lacks root, /dev/net/tun, QEMU >= 8.0, ...
    ├── CommandFailed          a host command exited non-zero
    │   └── HostCommandFailed  ... on a lab host, saying which and what for
    ├── HostKeyError           an SSH host's key is unknown or changed
    ├── HostUnreachable        no SSH session to a host
    ├── HostAuthFailed         an SSH host refused the key
    ├── VMError                QEMU did not start, died, or has no QMP session
    │   └── GuestBootFailed    (also EnvironmentalError) the guest never became ready
    ├── GuestError             the control channel or a guest command failed
    │   └── ControlChannelLost (also EnvironmentalError) the channel broke, QEMU still runs
    ├── DeadlineExceeded       a wait ran past its deadline
    │   ├── GuestSilent        the guest did not answer a command in time
    │   └── HostStalled        (also EnvironmentalError) a self-bounded host command never came back
    ├── LogTrouble             the log scan's failure of a case (never raised)
    ├── EnvironmentalError     the environment failed, not the system under test (retried once)
    ├── QMPCommandError        (harness.qmp) QEMU answered a command with an error
    ├── SnapshotError          (harness.snapshot) a booted-guest snapshot could not be saved or restored
    └── CompareError           (harness.compare.runner) a comparison's run did not run to its verdict

Verdicts are not errors: failed checks raise ``ChecksFailed``, an :class:`AssertionError`
that keeps them (``CheckList.verify``, :mod:`harness.checks`: the flake policy reads them), and a
failure with a known QEMU bug's symptom ``KnownBugSymptom``, another (:mod:`harness.verdicts`), the
one a known bug's expected failure absorbs.

Pure parsers (pcap, ``ethtool -i``, inventory fields) raise :class:`ValueError`
on malformed input; their callers turn it into one of the above (pydantic's
validation errors become :class:`ConfigError` in :func:`harness.config.build_config`).
"""

from __future__ import annotations

import shlex


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


class HostCommandFailed(CommandFailed):
    """A command on a lab host (local or SSH) exited non-zero; says which host and what it was for."""

    def __init__(self, host: str, what: str, argv: list[str], returncode: int, output: str) -> None:
        super().__init__(argv, returncode, output)
        self.host = host
        self.what = what

    def __str__(self) -> str:
        return (f"host {self.host}: {self.what} failed: {shlex.join(self.argv)} exited {self.returncode}: "
                f"{self.output.strip()[-2000:]}")


class HostKeyError(HarnessError):
    """An SSH host offered a key known_hosts does not list, or one that differs from it; nothing ran there."""


class HostUnreachable(HarnessError):
    """No SSH session to a host: connection refused, no route, no answer in time, or a broken handshake."""


class HostAuthFailed(HarnessError):
    """An SSH host refused the user with the configured key."""


class VMError(HarnessError):
    """A QEMU process failed to start, died, or did not answer in time."""


class GuestError(HarnessError):
    """The guest control channel failed or a guest command did not answer."""


class DeadlineExceeded(HarnessError):
    """A wait for an event or condition ran past its deadline."""


class GuestSilent(DeadlineExceeded):
    """The guest did not answer a command in time; its channel stayed open."""


class LogTrouble(HarnessError):
    """The log scan failed a case whose checks passed (kept as the case's failure for the flake
    policy, which asks the bed whether the trouble is its emulation's; never raised)."""


class EnvironmentalError(HarnessError):
    """The test environment failed, not the system under test.

    The plugin retries a case that fails with one of these once and reports it
    as flaky; a conformance failure (a check) is never retried.
    """


class HostStalled(EnvironmentalError, DeadlineExceeded):
    """A host did not finish a command that bounds its own run time (``timeout -s KILL``): the host
    itself stalled (an L1 under TCG that is panicking, a lost management link), not the system under test."""


class GuestBootFailed(EnvironmentalError, VMError):
    """The guest never became ready: its agent did not answer, or QEMU exited while it booted."""


class ControlChannelLost(EnvironmentalError, GuestError):
    """The guest agent's channel broke while QEMU kept running (a QEMU that died is not this)."""
