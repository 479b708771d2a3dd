"""The KVM probe's verdicts, with a host whose answers are given (the real probe runs in every e2e test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.accel import TIMED_OUT, probe_kvm
from harness.errors import DeadlineExceeded, HostStalled
from harness.guest import CommandResult
from harness.hosts import LocalHost
from harness.plugin.rerun import environmental_cause


class _AnsweringHost(LocalHost):
    """/dev/kvm is there; the probe's QEMU gives *answer*, or the command never comes back."""

    def __init__(self, answer: CommandResult | None) -> None:
        super().__init__("l1a")
        self.answer = answer

    def run(self, argv: list[str], timeout: float = 60.0, input: str | None = None) -> CommandResult:
        if argv[0] == "test":
            return CommandResult(0, "")
        if self.answer is None:
            raise DeadlineExceeded(f"host {self.name}: the probe did not finish within {timeout:g} s")
        return self.answer


def _probe(answer: CommandResult | None) -> tuple[bool, str]:
    return probe_kvm("qemu-system-x86_64", Path("/boot/vmlinuz"), host=_AnsweringHost(answer))


def test_a_banner_is_kvm_and_a_hang_or_an_abort_is_not() -> None:
    assert _probe(CommandResult(TIMED_OUT, "Linux version 6.1.0 ...\n")) == (True, "a kernel boots under KVM")
    assert _probe(CommandResult(TIMED_OUT, "")) == (False, "no kernel banner within 8 s (guest hangs)")
    assert _probe(CommandResult(1, "KVM: entry failed, hardware error 0x80000021\n")) == (
        False, "QEMU exited with 1: KVM: entry failed, hardware error 0x80000021")


def test_a_host_that_never_returns_the_bounded_probe_stalled_and_is_retried() -> None:
    # CI: an L1 under TCG left the 8 s probe unanswered for 38 s; the case failed, not retried.
    with pytest.raises(HostStalled, match=r"l1a: the probe did not finish within 38 s; .* so l1a itself stalled") as e:
        _probe(None)
    assert environmental_cause(e.value) is not None
