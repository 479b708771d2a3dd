"""Host capability probes: each returns ``None`` when present, else a reason naming the fix.

The plugin turns a reason into a skip, or an error under ``--require-resources``.
Probes are cheap and side-effect free; the KVM probe lives in :mod:`harness.accel`
because it needs the guest kernel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

MIN_QEMU = (8, 0)


def missing_root() -> str | None:
    if os.geteuid() != 0:
        return "not root: namespaces, bridges and taps need root (run as root or with sudo)"
    return None


def missing_tun() -> str | None:
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "/dev/net/tun is missing or not accessible: load the tun module ('modprobe tun')"
    return None


def missing_tools() -> str | None:
    absent = [tool for tool in ("ip", "sysctl") if shutil.which(tool) is None]
    if absent:
        return f"missing host tools {absent}: run 'make setup' (installs iproute2, procps)"
    return None


def parse_qemu_version(text: str) -> tuple[int, int, int] | None:
    """``QEMU emulator version 10.0.2 (Debian ...)`` → (10, 0, 2)."""
    m = re.search(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def qemu_version(binary: str) -> tuple[tuple[int, int, int] | None, str]:
    """(version, problem): the version of *binary*, or why it could not be read."""
    path = shutil.which(binary)
    if path is None:
        return None, (f"QEMU binary '{binary}' not found: run 'make setup' (installs qemu-system-x86 >= 8.0) "
                      "or pass --qemu-binary PATH")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"QEMU binary '{binary}' does not run: {e}"
    version = parse_qemu_version(out)
    if version is None:
        return None, f"'{binary} --version' printed no QEMU version: {out.strip()[:200]!r}"
    return version, ""


def missing_qemu(binary: str) -> str | None:
    version, problem = qemu_version(binary)
    if version is None:
        return problem
    if version[:2] < MIN_QEMU:
        return (f"QEMU {'.'.join(map(str, version))} at '{binary}' is older than 8.0 (no igb, old failover): "
                "run 'make setup' (Debian 12: bookworm-backports) or pass --qemu-binary PATH")
    return None


def host_problems(qemu_binary: str) -> list[str]:
    """Every missing capability of the flat topology, in the order a user should fix them."""
    probes = (missing_root(), missing_tun(), missing_tools(), missing_qemu(qemu_binary))
    return [p for p in probes if p]
