"""The log scan on console and QEMU logs shaped like real ones, and on a real QMP transcript."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.logscan import (
    GUEST_RESET,
    compile_allow_list,
    describe,
    quiet_guest_reset,
    scan_artifacts,
    scan_console,
    scan_qemu_log,
    scan_qmp_transcript,
)

CLEAN_BOOT = """\
[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)
[    0.000000] Command line: console=ttyS0 panic=-1 ipv6.disable=1 harness.mac=52:54:00:fa:00:01
[    1.354362] PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs" and report a bug
[    2.355893] AMD-Vi: AMD IOMMUv2 functionality not available on this system - This is not a bug.
[    4.101000] virtio_net virtio0 eth0: failover master:eth0 registered
[    4.211000] virtio_net virtio0 eth0: failover primary slave:eth2 registered
"""

NET_FAILOVER_WARNING = """\
[   12.345678] ------------[ cut here ]------------
[   12.345679] WARNING: CPU: 0 PID: 123 at net/core/failover.c:57 failover_slave_register+0x1a/0x200 [failover]
[   12.345680] Modules linked in: net_failover failover virtio_net e1000e
[   12.345690] Call Trace:
[   12.345691]  <TASK>
[   12.345692]  register_netdevice+0x4a1/0x640
[   12.345699] ---[ end trace 0000000000000000 ]---
"""

QEMU_LOG = """\
$ ip netns exec fohx-1-m-1-br qemu-system-x86_64 -name dst -M q35 -netdev tap,id=hn1,ifname=dst-pri
qemu-system-x86_64: warning: netdev hn1 has no peer
qemu-system-x86_64: warning: Primary device not found
"""


def test_clean_boot_has_nothing() -> None:
    assert scan_console(CLEAN_BOOT, "src-console.log") == []  # "panic=-1", "report a bug" are not trouble


def test_warning_and_its_trace_are_found_with_the_line() -> None:
    found = scan_console(CLEAN_BOOT + NET_FAILOVER_WARNING, "src-console.log")
    assert [f.kind for f in found] == ["kernel warning", "call trace"]
    assert "net/core/failover.c:57" in found[0].line
    assert str(found[0]).startswith("src-console.log: kernel warning: [   12.345679] WARNING: CPU: 0")


@pytest.mark.parametrize("line, kind", [
    ("[  5.1] BUG: kernel NULL pointer dereference, address: 0000000000000008", "kernel bug"),
    ("[  5.1] Oops: 0000 [#1] PREEMPT SMP NOPTI", "oops"),
    ("[  5.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", "kernel panic"),
    ("[  5.1] INFO: task kworker/0:1:12 blocked for more than 120 seconds.", "hung task"),
    ("[  5.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "rcu stall"),
    ("[  5.1] NETDEV WATCHDOG: eth1 (e1000e): transmit queue 0 timed out", "tx timeout"),
    ("[  5.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [swapper/0:1]", "kernel bug"),
])
def test_each_kind_of_trouble_is_named(line: str, kind: str) -> None:
    (found,) = scan_console(line + "\n", "c")
    assert found.kind == kind


def test_every_qemu_message_counts_but_the_command_line() -> None:
    found = scan_qemu_log(QEMU_LOG, "dst-qemu.log")
    assert [f.line for f in found] == ["qemu-system-x86_64: warning: netdev hn1 has no peer",
                                       "qemu-system-x86_64: warning: Primary device not found"]


def test_allow_list_silences_only_what_it_matches() -> None:
    allow = compile_allow_list([r"Primary device not found", r"failover\.c:57"])
    assert [f.line for f in scan_qemu_log(QEMU_LOG, "q", allow)] == [
        "qemu-system-x86_64: warning: netdev hn1 has no peer"]
    assert [f.kind for f in scan_console(NET_FAILOVER_WARNING, "c", allow)] == ["call trace"]


def test_bad_allow_pattern_is_named() -> None:
    with pytest.raises(ValueError, match=r"'\(' is not a valid regular expression"):
        compile_allow_list(["ok", "("])


def test_artifacts_are_scanned_at_any_depth(tmp_path: Path) -> None:
    (tmp_path / "retry").mkdir()
    (tmp_path / "src-console.log").write_text(CLEAN_BOOT)
    (tmp_path / "retry" / "dst-console.log").write_text(NET_FAILOVER_WARNING)
    (tmp_path / "dst-qemu.log").write_text(QEMU_LOG)
    (tmp_path / "probes.jsonl").write_text("WARNING: CPU: 0 PID: 1 at x\n")  # not a log the scan reads
    found = scan_artifacts(tmp_path)
    assert {f.source for f in found} == {"retry/dst-console.log", "dst-qemu.log"}
    text = describe(found, limit=2)
    assert "4 line(s)" in text and "... and 2 more" in text and "--allow-log" in text


def test_a_guest_that_reset_itself_is_found_and_a_reboot_on_purpose_can_be_allowed(data_dir: Path) -> None:
    """An L2's QMP transcript from make check (2026-12-06): the guest reset itself after its VF was
    re-plugged, printing nothing, and came back; the case's other checks saw a guest that renegotiated."""
    transcript = (data_dir / "l2-quiet-reset-qmp.jsonl").read_text()
    (found,) = scan_qmp_transcript(transcript, "src-qmp.jsonl")
    assert found.kind == "guest reset"
    assert found.line == f"{GUEST_RESET} (reason guest-reset, host time 1796517384.0920045)"
    assert scan_qmp_transcript(transcript, "src-qmp.jsonl", compile_allow_list([re.escape(GUEST_RESET)])) == []
    # The harness's own quit and a reset it asked for are not the guest's.
    ours = ('{"event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}\n'
            '{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}\n{"torn')
    assert scan_qmp_transcript(ours, "src-qmp.jsonl") == []


def test_a_reset_with_nothing_on_the_console_is_quiet_one_after_a_panic_is_not(data_dir: Path) -> None:
    transcript = (data_dir / "l2-quiet-reset-qmp.jsonl").read_text()
    console = (data_dir / "l2-quiet-reset-console.txt").read_text()
    assert quiet_guest_reset(transcript, console) == "RESET, reason guest-reset"
    panicked = console + "[   30.1] Kernel panic - not syncing: Fatal exception in interrupt\n"
    assert quiet_guest_reset(transcript, panicked) is None
    assert quiet_guest_reset("", console) is None
