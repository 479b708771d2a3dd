"""A VM: a frozen spec turned into QEMU argv, and the process that runs it.

:func:`build_argv` is pure (unit-tested). :class:`VM` owns one QEMU process,
its QMP session and its log files; :meth:`VM.shutdown` is idempotent and
always leaves no process behind, whatever state QEMU is in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from harness.errors import HarnessError, VMError
from harness.proc import die_with_parent
from harness.qmp import QMPSession

# How long a SIGKILLed QEMU may take to end (one stuck in the kernel never does).
KILL_WAIT_S = 10.0

log = logging.getLogger(__name__)

Accel = Literal["kvm", "tcg"]


@dataclass(frozen=True)
class Device:
    """One ``-device``, rendered in JSON form (the form libvirt uses; failover regressed on it once)."""

    driver: str
    id: str | None = None
    props: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, driver: str, id: str | None = None, **props: Any) -> Device:
        return cls(driver, id, tuple(props.items()))

    def without(self, *names: str) -> Device:
        return Device(self.driver, self.id, tuple((k, v) for k, v in self.props if k not in names))

    def with_props(self, **props: Any) -> Device:
        """The same device with *props* set (replacing, or appended)."""
        return Device(self.driver, self.id, (*self.without(*props).props, *props.items()))

    def qmp_arguments(self) -> dict[str, Any]:
        """The device as ``device_add`` arguments (the same dictionary as the JSON ``-device``)."""
        d: dict[str, Any] = {"driver": self.driver}
        if self.id is not None:
            d["id"] = self.id
        d.update(self.props)
        return d

    def to_json(self) -> str:
        return json.dumps(self.qmp_arguments(), separators=(",", ":"))


@dataclass(frozen=True)
class TapNetdev:
    id: str
    ifname: str

    def to_arg(self) -> str:
        return f"tap,id={self.id},ifname={self.ifname},script=no,downscript=no"


@dataclass(frozen=True)
class VMSpec:
    """Everything that decides a VM's QEMU command line."""

    name: str
    qemu_binary: str
    accel: Accel
    kernel: Path
    initrd: Path
    append: str
    memory_mib: int = 512
    machine: str = "q35"  # with options, e.g. an L1 hypervisor's "q35,kernel-irqchip=split"
    cpus: int = 1
    netdevs: tuple[TapNetdev, ...] = ()
    devices: tuple[Device, ...] = ()
    incoming: bool = False
    paused: bool = False  # -S: the guest runs only after QMP "cont"
    extra_args: tuple[str, ...] = ()

    def as_destination(self, name: str, netdevs: tuple[TapNetdev, ...]) -> VMSpec:
        """The same machine, waiting for an incoming migration, on its own taps."""
        return VMSpec(**{**self.__dict__, "name": name, "netdevs": netdevs, "incoming": True, "paused": False})


@dataclass(frozen=True)
class VMPaths:
    """Where one VM's sockets (short-lived, run dir) and logs (kept, artifacts dir) go."""

    qmp_socket: Path
    control_socket: Path
    console_log: Path
    stderr_log: Path
    qmp_transcript: Path

    # The chardev backends QEMU's argv gets; a QEMU that runs elsewhere (the nested
    # topology's L2, inside an L1) reaches the same sockets another way.
    def qmp_chardev(self) -> str:
        """QEMU connects to the harness's QMP listener (events from its first instant on)."""
        return f"socket,id=qmp,path={self.qmp_socket},server=off"

    def console_chardev(self) -> str:
        return f"file,id=console,path={self.console_log}"

    def control_chardev(self) -> str:
        return f"socket,id=control,path={self.control_socket},server=on,wait=off"

    @classmethod
    def for_vm(cls, name: str, run_dir: Path, artifacts_dir: Path) -> VMPaths:
        return cls(
            qmp_socket=run_dir / f"{name}.qmp",
            control_socket=run_dir / f"{name}.ctl",
            console_log=artifacts_dir / f"{name}-console.log",
            stderr_log=artifacts_dir / f"{name}-qemu.log",
            qmp_transcript=artifacts_dir / f"{name}-qmp.jsonl",
        )


def cpu_model(accel: Accel) -> str:
    # 'max' under TCG enables every emulated feature; KVM must mirror the host.
    return "host" if accel == "kvm" else "max"


def build_argv(spec: VMSpec, paths: VMPaths) -> list[str]:
    """QEMU argv for *spec*; sockets and logs from *paths*. Pure."""
    argv = [
        spec.qemu_binary,
        "-name", spec.name,
        "-M", spec.machine,
        "-accel", spec.accel,
        "-cpu", cpu_model(spec.accel),
        "-smp", str(spec.cpus),
        "-m", str(spec.memory_mib),
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", spec.append,
        "-chardev", paths.qmp_chardev(),
        "-mon", "chardev=qmp,mode=control",
        "-chardev", paths.console_chardev(),
        "-serial", "chardev:console",
        # The control channel is a second serial port: it migrates with the
        # guest and never shares the data path under test.
        "-chardev", paths.control_chardev(),
        "-serial", "chardev:control",
    ]
    for netdev in spec.netdevs:
        argv += ["-netdev", netdev.to_arg()]
    for device in spec.devices:
        argv += ["-device", device.to_json()]
    if spec.incoming:
        argv += ["-incoming", "defer"]
    if spec.paused:
        argv += ["-S"]
    argv += list(spec.extra_args)
    return argv


class QemuProcess(Protocol):
    """A running QEMU as :class:`VM` drives it: here (:class:`LocalProcess`) or inside an L1."""

    pid: int

    def poll(self) -> int | None: ...

    def end_reason(self) -> str | None:
        """None while it runs; else how it ended ("exited with 1", "killed by SIGSEGV")."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status; raises :class:`subprocess.TimeoutExpired` after *timeout*."""
        ...

    def kill(self) -> None:
        """SIGKILL it and wait until it ended; :class:`~harness.errors.VMError` if it does not."""
        ...

    def peak_rss_mib(self) -> float | None: ...

    def sync_output(self) -> None:
        """Bring what QEMU printed so far into its output file (a QEMU elsewhere writes it there late)."""
        ...


class LocalProcess:
    """A QEMU started on this host, in its own session (a Ctrl-C at the terminal must reach
    pytest, which then tears QEMU down in order, not QEMU directly)."""

    def __init__(self, argv: list[str], output: BinaryIO) -> None:
        self._popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True, preexec_fn=die_with_parent)
        self.pid = self._popen.pid

    def poll(self) -> int | None:
        return self._popen.poll()

    def end_reason(self) -> str | None:
        code = self._popen.poll()
        if code is None:
            return None
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"

    def sync_output(self) -> None:
        pass  # QEMU writes straight into the output file

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def kill(self) -> None:
        # The group: the launcher prefix (ip netns exec) execs QEMU, but be sure.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        try:
            self._popen.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            raise VMError(f"QEMU (pid {self.pid}) did not end within {KILL_WAIT_S:.0f} s of SIGKILL") from None

    def peak_rss_mib(self) -> float | None:
        """Peak resident memory (VmHWM) while the process is there to ask."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), None)


@dataclass
class VM:
    """One QEMU process with its QMP session. Use as a context manager or call :meth:`shutdown`."""

    spec: VMSpec
    paths: VMPaths
    launcher_prefix: list[str] = field(default_factory=list)  # e.g. ``ip netns exec <ns>``
    _qmp: QMPSession | None = field(default=None, init=False)
    # How QEMU is started: here by default; the nested topology starts L2s inside an L1.
    spawn: Callable[[list[str], BinaryIO], QemuProcess] = LocalProcess
    # QEMU's clock minus the harness's (an L2's QEMU stamps QMP events with its L1's clock).
    clock_offset_s: float = 0.0
    _proc: QemuProcess | None = field(default=None, init=False)
    _stderr: Any = field(default=None, init=False)
    # QEMU's peak resident memory, noted at shutdown (None: it was gone before).
    peak_rss_mib: float | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def qmp(self) -> QMPSession:
        """The QMP session; a :class:`VMError` before :meth:`launch` opened one."""
        if self._qmp is None:
            raise VMError(f"{self.name}: no QMP session (QEMU was never launched)")
        return self._qmp

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def argv(self) -> list[str]:
        return self.launcher_prefix + build_argv(self.spec, self.paths)

    def launch(self, connect_timeout: float = 30.0) -> VM:
        """Start QEMU and connect QMP; on any failure nothing is left running."""
        try:
            self._launch(connect_timeout)
        except BaseException as e:
            self.shutdown()
            if isinstance(e, HarnessError):
                raise VMError(f"{e}\n{self.stderr_tail()}") from e
            raise
        return self

    def _launch(self, connect_timeout: float) -> None:
        self.paths.qmp_socket.parent.mkdir(parents=True, exist_ok=True)
        self.paths.console_log.parent.mkdir(parents=True, exist_ok=True)
        self._qmp = QMPSession(self.name, self.paths.qmp_socket, self.paths.qmp_transcript, self.clock_offset_s)
        self._qmp.listen()
        argv = self.argv()
        self._stderr = self.paths.stderr_log.open("ab")
        self._stderr.write(("$ " + " ".join(argv) + "\n").encode())
        self._stderr.flush()
        log.info("%s: launching QEMU", self.name)
        log.debug("%s: argv %s", self.name, argv)
        self._proc = self.spawn(argv, self._stderr)
        self._qmp.accept(connect_timeout, exit_status=self.exit_status)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_status(self) -> str | None:
        """None while QEMU runs; else how it ended ("exited with 1", "killed by SIGSEGV")."""
        return "not running" if self._proc is None else self._proc.end_reason()

    def stderr_text(self) -> str:
        if self._proc is not None and self._stderr is not None:  # still open: QEMU may have more to say
            self._proc.sync_output()
        try:
            return self.paths.stderr_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def messages(self) -> list[str]:
        """What QEMU printed (its command line excluded): failover reports most failures only there."""
        return [line for line in self.stderr_text().splitlines() if line and not line.startswith("$ ")]

    def kill(self) -> None:
        """SIGKILL QEMU at once (fault injection: a destination dying mid-stream)."""
        if self.is_running():
            assert self._proc is not None
            self._proc.kill()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Ask QEMU to quit, kill it if it does not; close QMP and logs. Idempotent."""
        self._note_peak_rss()
        try:
            if self.is_running() and self._qmp is not None:
                try:
                    self._qmp.execute("quit", timeout=timeout)
                except HarnessError as e:
                    log.debug("%s: quit: %s", self.name, e)
            if self._proc is not None:
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s: QEMU ignored quit, killing it", self.name)
        finally:  # also after an interruption: no QEMU stays behind
            try:
                if self._proc is not None and self._proc.poll() is None:
                    self._proc.kill()
            finally:
                self._close_files()

    def _close_files(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        for sock in (self.paths.qmp_socket, self.paths.control_socket):
            sock.unlink(missing_ok=True)

    def _note_peak_rss(self) -> None:
        """Keep QEMU's peak resident memory (VmHWM) while the process is still there to ask."""
        if self._proc is None or self._proc.poll() is not None:
            return
        if (peak := self._proc.peak_rss_mib()) is not None:
            self.peak_rss_mib = peak

    def __enter__(self) -> VM:
        return self.launch()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
