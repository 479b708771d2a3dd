"""When a failure is the emulated hypervisor's (L1s or lab hosts under TCG), not the emulation's
under test: known faults in their logs, kernel oops summaries. Pure.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from harness.checks import ChecksFailed
from harness.errors import GuestSilent

# What TCG's emulation of a hypervisor (L1s under TCG, their guest under KVM in them) has been
# seen to do to a case that is otherwise fine: an L2 QEMU that cannot load its vCPU state, an L1
# kernel that dies. Under real nesting each of these is a finding, and is not excused.
L1_PANIC = "Kernel panic"
EMULATED_NESTING_FAULTS = re.compile(rf"Failed to set nested state|{L1_PANIC}")
# A kernel console's boot banner, its first oops line, where it was, a reliable call-trace frame
# (a "? name+0x.." frame is a guess, and is left out).
_KERNEL_BOOT = re.compile(r"^\[[\s\d.]+\] Linux version ", re.MULTILINE)
_OOPS_CAUSE = re.compile(r"^\[[\s\d.]+\] ((?:BUG|kernel BUG|Oops)\b.*)$", re.MULTILINE)
_OOPS_RIP = re.compile(r"RIP: [0-9a-f]+:([A-Za-z_][\w.]*)\+0x")
_TRACE_FRAME = re.compile(r"^\[[\s\d.]+\]\s+([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+", re.MULTILINE)
OOPS_FRAMES = 12  # enough to show a recursion's repeating frames, short enough for a report line
# The L1s' kernel-mode page faults, as their ftrace ring prints them on an oops (hypervisor.L1_FAULT_TRACE),
# with the ring's timestamp (microseconds since boot, the clock of the console's own stamps).
_FAULT = re.compile(r" (\d+)us : page_fault_kernel: address=(\S+) ip=(\S+) error_code=(\S+)")
OOPS_FAULTS = 4  # the newest faults (runs folded) a summary shows: where nested faults would repeat
# Only faults this close to the panic tell of it: a fault that recurses before its tracepoint
# (an L1 entered with its guest's GS base, 2026-12-07) leaves the ring with faults of long before.
OOPS_FAULT_WINDOW_S = 1.0
_PANIC_STAMP = re.compile(rf"^\[\s*(\d+\.\d+)\] {L1_PANIC}", re.MULTILINE)
# An exception or interrupt entry frame and the kernel context it interrupted, with that context's flags.
_ENTERED = re.compile(r"^\[[\s\d.]+\]\s+(asm_\w+)\+0x[0-9a-f]+/0x[0-9a-f]+\n"
                      r"\[[\s\d.]+\] RIP: 0010:(\S+)(?:\s*\[\w+\])?\n"  # the interrupted context, [module]
                      r"(?:.*\n)??\[[\s\d.]+\] RSP: [0-9a-f]+:[0-9a-f]+ EFLAGS: ([0-9a-f]+)", re.MULTILINE)
IF_FLAG = 0x200


def kernel_oops_summary(console: str, panic_at: int) -> str:
    """What a kernel console says around the panic at offset *panic_at*, from that boot's log: its
    first oops line, where it was (RIP) and the reliable frames of its first call trace (from its first
    frame when the console dropped the header), a run of one frame folded as ``name x N`` (a stack
    overflow shows its recursion there), the kernel context the outermost exception or interrupt
    entered and whether that context had interrupts enabled, then the kernel page faults of the
    last :data:`OOPS_FAULT_WINDOW_S` before the panic from the ftrace ring an L1 prints on an oops,
    folded alike. "" if none. Pure."""
    boots = [m.start() for m in _KERNEL_BOOT.finditer(console)]
    start = max((b for b in boots if b <= panic_at), default=0)
    end = min((b for b in boots if b > panic_at), default=len(console))
    episode = console[start:end]
    parts = []
    if (cause := _OOPS_CAUSE.search(episode)) is not None:
        parts.append(cause.group(1).strip())
    if (rip := _OOPS_RIP.search(episode)) is not None:
        parts.append(f"RIP {rip.group(1)}")
    trace = _first_trace(episode)
    frames = _folded(frame.group(1) for frame in _TRACE_FRAME.finditer(trace))
    if frames:
        parts.append("trace " + " < ".join(frames[:OOPS_FRAMES]) + (" < ..." if len(frames) > OOPS_FRAMES else ""))
    if entries := list(_ENTERED.finditer(trace)):
        entry, context, flags = entries[-1].groups()  # the outermost: the stack's oldest frame
        state = "enabled" if int(flags, 16) & IF_FLAG else "disabled"
        parts.append(f"{entry} entered {context} with interrupts {state} (RFLAGS {flags})")
    panic = _PANIC_STAMP.search(episode)
    since = float(panic.group(1)) - OOPS_FAULT_WINDOW_S if panic else 0.0
    faults = _folded(f"ip={ip} address={address} error_code={code}"
                     for stamp, address, ip, code in (m.groups() for m in _FAULT.finditer(episode))
                     if int(stamp) / 1e6 >= since)
    if faults:  # oldest first, as the ring printed them
        parts.append("last kernel page faults " + ", ".join(faults[-OOPS_FAULTS:]))
    elif panic and _FAULT.search(episode):
        parts.append(f"no kernel page fault in the fault ring's last {OOPS_FAULT_WINDOW_S:g} s before the panic")
    return "; ".join(parts)


def _first_trace(episode: str) -> str:
    """The first call trace of an oops: from ``Call Trace:``, or from its first frame when the
    console dropped the lines before, to the modules line (or the trace's end)."""
    header = episode.find("Call Trace:")
    first_frame = _TRACE_FRAME.search(episode)
    start = header if header >= 0 else (first_frame.start() if first_frame else len(episode))
    ends = [at for marker in ("Modules linked in", "end trace", L1_PANIC)
            if (at := episode.find(marker, start)) >= 0]
    return episode[start:min(ends, default=len(episode))]


def _folded(items: Iterable[str]) -> list[str]:
    """*items* with each run of one item folded as ``item x N``."""
    return [item if n == 1 else f"{item} x {n}"
            for item, n in ((item, len(list(run))) for item, run in itertools.groupby(items))]


def _cause(failure: BaseException, kind: type[BaseException]) -> BaseException | None:
    """*failure* or the first exception of *kind* it was raised from (``raise ... from``)."""
    seen: BaseException | None = failure
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__
    return seen


def _line_at(text: str, at: int) -> str:
    return text[text.rfind("\n", 0, at) + 1:].split("\n", 1)[0].strip()


def panic_report(console: str, at: int) -> str:
    """The console line of the kernel panic at offset *at*, with its :func:`kernel_oops_summary` in
    parentheses when there is one. Pure."""
    oops = kernel_oops_summary(console, at)
    return _line_at(console, at) + (f" ({oops})" if oops else "")


def emulated_nesting_fault(failure: BaseException, logs: dict[str, str], hypervisors: str,
                           quiet_resets: dict[str, str] | None = None) -> str | None:
    """Why *failure*, with a guest on *hypervisors* that run under TCG, is the emulation's fault, if
    it is: one of *logs* (name: text) shows a known emulation failure (an L1's kernel panic with its
    oops summarised), a guest reset itself with nothing on its console (*quiet_resets*, by guest:
    :func:`~harness.logscan.quiet_guest_reset`), the guest fell silent, or every failed check is a stall in
    which no probe was lost (:attr:`~harness.checks.CheckResult.held_back`: 2.3 s after the restore on the lab,
    0 of 785 probes lost, in CI). Each seen under TCG with no trace in any log; under KVM each is a finding. Pure."""
    where = f"emulated hypervisor ({hypervisors} under TCG)"
    for name, text in logs.items():
        if (sign := EMULATED_NESTING_FAULTS.search(text)) is not None:
            said = panic_report(text, sign.start()) if sign.group() == L1_PANIC else _line_at(text, sign.start())
            return f"{where}: {name} says: {said}"
    if quiet_resets:
        guest, reset = next(iter(quiet_resets.items()))
        return f"{where}: {guest} reset itself with nothing on its console ({reset}: a triple fault)"
    if (silent := _cause(failure, GuestSilent)) is not None:  # the L2 or, starting a program in it, an L1
        return f"{where}: the guest fell silent ({silent})"
    if isinstance(failure, ChecksFailed) and all(check.held_back for check in failure.failed):
        late = ", ".join(check.name for check in failure.failed)
        return f"{where}: the guest stalled, nothing lost ({late}: every probe answered, some late)"
    return None
