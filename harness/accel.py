"""Choosing the accelerator: KVM only when a real guest actually runs under it.

``/dev/kvm`` existing proves little: some hosts (paravirtual KVM variants)
accept a real-mode toy guest and then abort or hang as soon as a kernel sets up
long mode. So the probe boots the guest kernel itself, without an initramfs,
and wants it to print its banner on the serial port within a few seconds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.proc import die_with_parent
from harness.vm import Accel, cpu_model

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 8.0
BANNER = b"Linux version"


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str


def probe_kvm(qemu_binary: str, kernel: Path, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Boot *kernel* under KVM until its banner appears; (usable, why)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    with tempfile.TemporaryDirectory(prefix="fohx-kvm-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            qemu_binary, "-accel", "kvm", "-M", "q35", "-cpu", cpu_model("kvm"), "-m", "256",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
            "-serial", f"file:{console}",
        ]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        try:
            out, _ = proc.communicate(timeout=timeout)
            last = (out.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            exited = f"QEMU exited with {proc.returncode}: {last[-200:]}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            exited = f"no kernel banner within {timeout:.0f} s (guest hangs)"
        booted = console.exists() and BANNER in console.read_bytes()
    return (True, "a kernel boots under KVM") if booted else (False, exited)


def choose_accel(requested: str, qemu_binary: str, kernel: Path) -> AccelChoice:
    """Resolve ``--accel``: ``kvm`` and ``tcg`` are taken as given, ``auto`` probes."""
    if requested in ("kvm", "tcg"):
        return AccelChoice(requested, "forced by --accel")  # type: ignore[arg-type]
    usable, why = probe_kvm(qemu_binary, kernel)
    if usable:
        return AccelChoice("kvm", why)
    return AccelChoice("tcg", f"KVM unusable: {why}")


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.accel QEMU KERNEL``: exit 0 if a guest really boots under KVM here
    (how the nested topology asks an L1 whether its L2 can use KVM)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.accel")
    parser.add_argument("qemu_binary")
    parser.add_argument("kernel", type=Path)
    args = parser.parse_args(argv)
    usable, why = probe_kvm(args.qemu_binary, args.kernel)
    print(f"kvm {'usable' if usable else 'unusable'}: {why}")
    return 0 if usable else 1


if __name__ == "__main__":
    raise SystemExit(main())
