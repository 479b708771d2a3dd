"""Scan what the guests and QEMU printed during a case for trouble nobody asserted on.

A kernel warning or call trace in the guest, any line QEMU writes to stderr
(QEMU only writes warnings and errors there), or a guest that reset itself
(QMP ``RESET`` from the guest: a reboot, or a triple fault that prints
nothing) fails a case that otherwise passed: failover bugs often show up first
as a ``WARNING:`` in net_failover or a ``netdev ... has no peer`` that no metric
sees, and a guest that crashed and came back re-negotiates failover as if
nothing happened. Cases that provoke such a line
on purpose allow it (``@pytest.mark.allow_log(regex)``); a run allows more with
``--allow-log REGEX`` or ``allow_log`` in the profile.

Pure functions over log text, so they are tested on recorded logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.jsonlines import json_records

# Guest kernel lines that mean something went wrong, whatever the driver.
KERNEL_TROUBLE: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern)) for kind, pattern in (
        ("kernel warning", r"WARNING: CPU: \d+ PID: \d+ at "),
        ("kernel warning", r"WARNING: at "),
        ("call trace", r"Call Trace:"),
        ("kernel bug", r"\bBUG: |kernel BUG at "),
        ("oops", r"\bOops: "),
        ("kernel panic", r"Kernel panic - not syncing"),
        ("general protection fault", r"general protection fault"),
        ("hung task", r"INFO: task \S+ blocked for more than"),
        ("rcu stall", r"rcu: INFO: \S+ (self-)?detected stalls"),
        ("undefined behaviour", r"UBSAN: "),
        ("tx timeout", r"NETDEV WATCHDOG: "),
    )
)
# QEMU's log files start with the command line, written by the harness as "$ argv".
COMMAND_LINE_PREFIX = "$ "
# Artifact files, by name, and how to read them.
CONSOLE_GLOB = "*console.log"
QEMU_GLOB = "*qemu.log"
QMP_GLOB = "*qmp.jsonl"
# How a guest's own reset reads in a finding (what an allow_log regex matches).
GUEST_RESET = "QMP RESET from the guest"


@dataclass(frozen=True)
class Finding:
    """One line that fails the case: where it was, what kind of trouble, the line itself."""

    source: str
    kind: str
    line: str

    def __str__(self) -> str:
        return f"{self.source}: {self.kind}: {self.line}"


def compile_allow_list(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Compile allow-list regexes; a bad one raises ValueError naming the pattern."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as e:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({e})") from None
    return tuple(compiled)


def _allowed(line: str, allow: tuple[re.Pattern[str], ...]) -> bool:
    return any(p.search(line) for p in allow)


def scan_console(text: str, source: str, allow: tuple[re.Pattern[str], ...] = ()) -> list[Finding]:
    """Kernel warnings, traces, oopses, panics, stalls in a guest's console log."""
    found = []
    for line in text.splitlines():
        for kind, pattern in KERNEL_TROUBLE:
            if pattern.search(line):
                if not _allowed(line, allow):
                    found.append(Finding(source, kind, line.strip()))
                break
    return found


def scan_qemu_log(text: str, source: str, allow: tuple[re.Pattern[str], ...] = ()) -> list[Finding]:
    """Every line QEMU printed (its command line excluded) that the allow-list does not cover."""
    return [Finding(source, "qemu message", line.strip()) for line in text.splitlines()
            if line.strip() and not line.startswith(COMMAND_LINE_PREFIX) and not _allowed(line, allow)]


@dataclass(frozen=True)
class GuestReset:
    """A ``RESET`` event the guest caused, as its QMP transcript recorded it."""

    reason: object
    host_time: object


def guest_resets(transcript: str) -> list[GuestReset]:
    """The ``RESET`` events a guest caused, from a QMP transcript (``*-qmp.jsonl``). Pure."""
    return [GuestReset(data.get("reason"), entry.get("host_time")) for entry in json_records(transcript)
            if entry.get("event") == "RESET" and (data := entry.get("data") or {}).get("guest")]


def scan_qmp_transcript(text: str, source: str, allow: tuple[re.Pattern[str], ...] = ()) -> list[Finding]:
    """Every reset a guest caused (``RESET`` with ``guest: true``), as ``GUEST_RESET (reason ...)``."""
    found = []
    for reset in guest_resets(text):
        line = f"{GUEST_RESET} (reason {reset.reason}, host time {reset.host_time})"
        if not _allowed(line, allow):
            found.append(Finding(source, "guest reset", line))
    return found


def quiet_guest_reset(qmp_transcript: str, console: str) -> str | None:
    """The first reset the guest caused (QMP ``RESET``) if its console shows no kernel trouble (no
    panic, oops or warning): a triple fault, which prints nothing. None otherwise. Pure."""
    resets = guest_resets(qmp_transcript)
    if not resets or scan_console(console, "console"):
        return None
    return f"RESET, reason {resets[0].reason}"


def scan_artifacts(directory: Path, allow: tuple[re.Pattern[str], ...] = ()) -> list[Finding]:
    """Scan every VM console, QEMU log and QMP transcript a case left in *directory* (any depth)."""
    found = []
    for glob, scan in ((CONSOLE_GLOB, scan_console), (QEMU_GLOB, scan_qemu_log), (QMP_GLOB, scan_qmp_transcript)):
        for path in sorted(directory.rglob(glob)):
            found += scan(path.read_text(errors="replace"), str(path.relative_to(directory)), allow)
    return found


def describe(findings: list[Finding], limit: int = 12) -> str:
    """The failure text: the lines quoted, then how to allow them if they are expected."""
    lines = [f"log scan: {len(findings)} line(s) of trouble in the guests' consoles or QEMU's output:"]
    lines += [f"  {f}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"  ... and {len(findings) - limit} more (see the case's artifacts)")
    lines.append("If a line is expected, allow it: --allow-log REGEX, allow_log in the profile, "
                 "or @pytest.mark.allow_log(REGEX) on the case.")
    return "\n".join(lines)
