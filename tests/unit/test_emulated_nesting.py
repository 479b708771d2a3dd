"""Which failures on a nested bed under TCG are the emulation's (retried once) and which are findings."""

from __future__ import annotations

from pathlib import Path

from harness.checks import CheckList
from harness.errors import DeadlineExceeded, GuestSilent, VMError
from harness.topologies.emulated_nesting import emulated_nesting_fault, kernel_oops_summary

# As printed in runs on this machine (L1s under TCG, the L2 under KVM in them).
L2_QEMU_LOG = ("qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.80000001H:ECX.svm [bit 2]\n"
               "qemu-system-x86_64: Failed to set nested state: Invalid argument\n")
L1_PANIC = ("[  812.301562] Call Trace:\n"
            "[  812.318245] Kernel panic - not syncing: corrupted stack end detected inside scheduler\n"
            "[  812.322977] Kernel Offset: disabled\n")
QUIET = {"dst's QEMU": "", "l1a's console": "[    0.000000] Linux version 6.1.0\n"}


def test_a_silent_guest_is_the_emulations_fault() -> None:
    cause = emulated_nesting_fault(GuestSilent("guest did not answer 'fo-state' within 240 s"), QUIET, "the L1s")
    assert cause == ("emulated hypervisor (the L1s under TCG): the guest fell silent "
                     "(guest did not answer 'fo-state' within 240 s)")


def test_an_l1_that_fell_silent_while_starting_the_guest_is_the_emulations_fault() -> None:
    """Seen in a repeated run: l1a's agent did not answer the L2 QEMU's launch for 60 s, which reached the
    bed as the VMError it was raised into."""
    try:
        try:
            raise GuestSilent("guest did not answer 'TMPDIR=/var/tmp chroot /host ...' within 60 s")
        except GuestSilent as silent:
            raise VMError("starting src: guest did not answer") from silent
    except VMError as failure:
        cause = emulated_nesting_fault(failure, QUIET, "the L1s")
    assert cause == ("emulated hypervisor (the L1s under TCG): the guest fell silent "
                     "(guest did not answer 'TMPDIR=/var/tmp chroot /host ...' within 60 s)")


def test_a_known_emulation_failure_in_a_log_is_quoted_whatever_failed() -> None:
    failed_check = AssertionError("FAIL migration_completed: destination never resumed")
    assert emulated_nesting_fault(failed_check, {**QUIET, "dst's QEMU": L2_QEMU_LOG}, "lab host l1b") == (
        "emulated hypervisor (lab host l1b under TCG): dst's QEMU says: "
        "qemu-system-x86_64: Failed to set nested state: Invalid argument")
    assert emulated_nesting_fault(failed_check, {**QUIET, "l1b's console": L1_PANIC}, "the L1s") == (
        "emulated hypervisor (the L1s under TCG): l1b's console says: [  812.318245] Kernel panic - not syncing: "
        "corrupted stack end detected inside scheduler")


def test_a_guest_that_reset_quietly_is_the_emulations_fault() -> None:
    """Seen in make check: the L2 reset itself after its VF was re-plugged, nothing on its console; the
    case failed on the TCP stream the reset broke."""
    failed_check = AssertionError("FAIL tcp_session_survived: the iperf3 stream broke")
    assert emulated_nesting_fault(failed_check, QUIET, "the L1s", {"src": "RESET, reason guest-reset"}) == (
        "emulated hypervisor (the L1s under TCG): src reset itself with nothing on its console "
        "(RESET, reason guest-reset: a triple fault)")
    # An L1's panic is the better explanation, and is named first.
    assert "l1b's console says" in str(emulated_nesting_fault(failed_check, {**QUIET, "l1b's console": L1_PANIC},
                                                              "the L1s", {"src": "RESET, reason guest-reset"}))


def _failed(*late_or_lost: bool) -> BaseException:
    """The failure of a case whose failed checks are stalls in which nothing was lost (True) or not."""
    checks = CheckList()
    for n, held_back in enumerate(late_or_lost):
        checks.check(f"gap{n}", False, "longest time without a reply 2289.5 ms, limit 500 ms", held_back=held_back)
    checks.check("migration_completed", True, "completed")
    try:
        checks.verify()
    except AssertionError as failure:
        return failure
    raise AssertionError("verify() passed failed checks")


def test_a_stall_with_nothing_lost_is_the_emulations_fault() -> None:
    """Seen in CI on the lab (L1s under TCG): 2.3 s without a reply after the restore, 0 of 785 probes lost."""
    assert emulated_nesting_fault(_failed(True, True), QUIET, "lab host l1a, l1b") == (
        "emulated hypervisor (lab host l1a, l1b under TCG): the guest stalled, nothing lost "
        "(gap0, gap1: every probe answered, some late)")
    # One check that lost probes makes it a finding: a stall does not lose what it holds back.
    assert emulated_nesting_fault(_failed(True, False), QUIET, "the L1s") is None


def test_other_failures_are_findings() -> None:
    assert emulated_nesting_fault(AssertionError("FAIL probes_lost: 5000 > 4000"), QUIET, "the L1s") is None
    assert emulated_nesting_fault(DeadlineExceeded("no RESUME within 600 s"), QUIET, "the L1s") is None


SYSRQ_TRACE = ("trace dump_stack_lvl < panic < sysrq_handle_crash < __handle_sysrq.cold < write_sysrq_trigger < "
               "proc_reg_write < vfs_write < ksys_write < do_syscall_64 < entry_SYSCALL_64_after_hwframe")


def test_a_panics_call_trace_is_summarised_from_a_real_console(data_dir: Path) -> None:
    """A lab L1's console (tests/e2e/test_lab_hosts.py's sysrq crash), up to the banner of its reboot: the
    panic's own trace, printed after the panic line, in one line; the next boot is not read."""
    console = (data_dir / "l1-console-sysrq-panic.txt").read_text()
    assert kernel_oops_summary(console, console.index("Kernel panic")) == SYSRQ_TRACE
    assert emulated_nesting_fault(AssertionError("FAIL x"), {"l1a's console": console}, "the L1s") == (
        "emulated hypervisor (the L1s under TCG): l1a's console says: [ 1958.227628] Kernel panic - not syncing: "
        f"sysrq triggered crash ({SYSRQ_TRACE})")


def test_a_stack_overflow_panic_in_ci_is_summarised(data_dir: Path) -> None:
    """The L1 panic seen in CI, as l1a's console printed it during make check (2026-12-05): the L2's QEMU
    thread overflowed its stack in exc_page_fault's first instructions, with no call trace printed.
    The summary gives the BUG line and RIP, and does not invent a trace."""
    console = (data_dir / "l1-console-stack-guard-panic.txt").read_text()
    assert kernel_oops_summary(console, console.index("Kernel panic")) == (
        "BUG: TASK stack guard page was hit at 00000000bbccc01e (stack is 00000000141f0132..00000000e9888cd8); "
        "RIP exc_page_fault")


def test_an_oops_summary_quotes_only_the_page_faults_just_before_the_panic(data_dir: Path) -> None:
    """An L1 crashed with sysrq (2026-12-06) prints its kernel page-fault ring (hypervisor.L1_FAULT_TRACE)
    after the panic's trace; its newest faults are 3 s older than the panic, so they tell nothing of it
    and the summary says so instead of quoting them."""
    console = (data_dir / "l1-console-sysrq-fault-trace.txt").read_text()
    summary = kernel_oops_summary(console, console.index("Kernel panic"))
    assert summary.startswith("trace dump_stack_lvl < panic < sysrq_handle_crash < "), summary
    assert summary.endswith("; no kernel page fault in the fault ring's last 1 s before the panic"), summary


def test_nested_page_faults_fold_into_one_run() -> None:
    fault = ("[ 9.1] qemu-1610 0d.... 8999990us : page_fault_kernel: "
             "address=0xff5a8d4e027a3ff8 ip=exc_page_fault error_code=0x2\n")
    stale = fault.replace("8999990us", "7000000us").replace("exc_page_fault", "clear_user_original")
    console = ("[ 9.0] BUG: TASK stack guard page was hit\n[    9.000000] Kernel panic - not syncing: x\n"
               + stale + fault * 3)
    assert kernel_oops_summary(console, console.index("Kernel panic")) == (
        "BUG: TASK stack guard page was hit; "
        "last kernel page faults ip=exc_page_fault address=0xff5a8d4e027a3ff8 error_code=0x2 x 3")


def test_an_interrupt_taken_right_after_vmrun_is_named(data_dir: Path) -> None:
    """The L1 panic of a nested suite run (2026-12-07, l1b, the postcopy case): the console dropped the
    oops's first lines; its trace ends in an interrupt that entered KVM's __svm_vcpu_run at the
    instruction after VMRUN, where the L2's GS base is still loaded: every per-CPU access faulted from
    there (x N), until the stack ran out. The fault ring held nothing of the last second."""
    console = (data_dir / "l1-console-svm-interrupt-panic.txt").read_text()
    assert kernel_oops_summary(console, console.index("Kernel panic")) == (
        "RIP exc_page_fault; trace asm_exc_page_fault x 3 < common_interrupt < asm_common_interrupt < "
        "svm_vcpu_enter_exit < svm_vcpu_run < kvm_arch_vcpu_ioctl_run < kvm_vcpu_ioctl < __x64_sys_ioctl < "
        "do_syscall_64 < entry_SYSCALL_64_after_hwframe; asm_common_interrupt entered __svm_vcpu_run+0x9c/0x210 "
        "with interrupts enabled (RFLAGS 00010246); "
        "no kernel page fault in the fault ring's last 1 s before the panic")
