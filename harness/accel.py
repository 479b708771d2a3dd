"""Choosing the accelerator: KVM only when a real guest actually runs under it.

``/dev/kvm`` existing proves little: some hosts (paravirtual KVM variants)
accept a real-mode toy guest and then abort or hang as soon as a kernel sets up
long mode. So the probe boots the guest kernel itself, without an initramfs,
and wants it to print its banner on the serial port within a few seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from harness.errors import DeadlineExceeded, HostStalled
from harness.hosts import Host, LocalHost
from harness.vm import Accel, cpu_model

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 8.0
BANNER = "Linux version"
TIMED_OUT = 128 + 9  # timeout -s KILL's status when it had to kill


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str


def probe_kvm(qemu_binary: str, kernel: Path, timeout: float = PROBE_TIMEOUT_S,
              host: Host | None = None) -> tuple[bool, str]:
    """Boot *kernel* under KVM on *host* (this machine by default) until its banner appears on the
    serial port; (usable, why). *kernel* is a path on that host."""
    host = host or LocalHost()
    if host.run(["test", "-r", "/dev/kvm", "-a", "-w", "/dev/kvm"]).rc != 0:
        return False, "/dev/kvm is missing or not accessible"
    # timeout(1) ends QEMU on the host itself: a booted guest never exits on its own.
    argv = ["timeout", "-s", "KILL", f"{timeout:g}", qemu_binary, "-accel", "kvm", "-M", "q35",
            "-cpu", cpu_model("kvm"), "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1", "-serial", "stdio"]
    try:
        result = host.run(argv, timeout=timeout + 30)
    except DeadlineExceeded as e:
        raise HostStalled(f"{e}; timeout(1) ends the probe after {timeout:g} s, so {host.name} itself "
                          f"stalled") from e
    if BANNER in result.output:
        return True, "a kernel boots under KVM"
    if result.rc == TIMED_OUT:
        return False, f"no kernel banner within {timeout:.0f} s (guest hangs)"
    last = (result.output.strip().splitlines() or ["no output"])[-1]
    return False, f"QEMU exited with {result.rc}: {last[-200:]}"


def choose_accel(requested: str, qemu_binary: str, kernel: Path) -> AccelChoice:
    """Resolve ``--accel``: ``kvm`` and ``tcg`` are taken as given, ``auto`` probes."""
    if requested in ("kvm", "tcg"):
        return AccelChoice(requested, "forced by --accel")  # type: ignore[arg-type]
    usable, why = probe_kvm(qemu_binary, kernel)
    if usable:
        return AccelChoice("kvm", why)
    return AccelChoice("tcg", f"KVM unusable: {why}")
