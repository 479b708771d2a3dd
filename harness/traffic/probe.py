"""Host side of the packet recorders: start them in a namespace, stop them, read what they saw.

Both recorders are subprocesses (``probe_main`` in the peer namespace,
``capture_main`` where the data-path interfaces are) that print JSON lines
to a log kept with the test's artifacts; the log is the record, parsed by the
pure functions below.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.errors import HarnessError
from harness.proc import die_with_parent
from harness.timeline import PathSeen, ProbeReply, ProbeSent
from harness.traffic.icmp import ICMP_ECHO_REQUEST, ICMP_ID, MAGIC

log = logging.getLogger(__name__)


@dataclass
class ProbeLog:
    sent: list[ProbeSent] = field(default_factory=list)
    replies: list[ProbeReply] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def parse_probe_log(lines: list[str]) -> ProbeLog:
    """``{"s": seq, "t": t}`` → sent, ``{"r": seq, "t": t}`` → reply (duplicates kept), ``{"stats": ..}``."""
    out = ProbeLog()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        if "s" in rec:
            out.sent.append(ProbeSent(rec["s"], rec["t"]))
        elif "r" in rec:
            out.replies.append(ProbeReply(rec["r"], rec["t"]))
        elif "stats" in rec:
            out.stats = rec["stats"]
    return out


def parse_capture_log(lines: list[str]) -> list[PathSeen]:
    """``{"p": seq, "t": t, "path": name, ...}`` lines → path sightings."""
    out = []
    for line in lines:
        if line.startswith('{"p"'):
            rec = json.loads(line)
            out.append(PathSeen(rec["p"], rec["t"], rec["path"]))
    return out


class RecorderProcess:
    """A JSON-lines recorder subprocess; :meth:`stop` is idempotent and returns the log's lines."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._err_path = log_path.with_suffix(".stderr")
        with log_path.open("w") as out, self._err_path.open("w") as err:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent)
        self._lines: list[str] | None = None
        self._offset = 0  # how far wait_for_line has read: lines before it were already looked at

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise HarnessError(f"{self.log_path.stem} recorder exited early: {self._err_path.read_text()[-1000:]}")

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str | None:
        """Follow the log for a new complete line satisfying *predicate*; the line, or None after *timeout*.

        Lines examined by an earlier call are not examined again (the log is ASCII JSON lines).
        """
        deadline = time.monotonic() + timeout
        with self.log_path.open() as f:
            f.seek(self._offset)
            pending = ""
            while True:
                self.check_alive()
                pending += f.read()
                while "\n" in pending:
                    line, pending = pending.split("\n", 1)
                    self._offset += len(line) + 1
                    if predicate(line):
                        return line
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.02)

    def request_stop(self) -> None:
        """Ask the recorder to finish (SIGTERM) without waiting: several can wind down at once."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def stop(self) -> list[str]:
        if self._lines is not None:
            return self._lines
        if self._proc is not None:
            if self._proc.poll() is None:
                self.request_stop()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            code, self._proc = self._proc.returncode, None
            if code not in (0, -signal.SIGTERM):
                raise HarnessError(f"{self.log_path.stem} recorder failed ({code}): "
                                   f"{self._err_path.read_text()[-1000:]}")
        self._lines = self.log_path.read_text().splitlines()
        return self._lines


def _module_argv(exec_prefix: list[str], module: str, *args: str) -> list[str]:
    return [*exec_prefix, sys.executable, "-m", module, *args]


def build_template(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytearray:
    """The probe frame (:mod:`harness.traffic.icmp`): Ethernet/IPv4/ICMP echo request with id
    :data:`~harness.traffic.icmp.ICMP_ID` and a zero sequence payload."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    frame = (Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip, ttl=64)
             / ICMP(type=ICMP_ECHO_REQUEST, id=ICMP_ID, seq=0) / Raw(MAGIC + bytes(8)))
    return bytearray(bytes(frame))


class Prober(RecorderProcess):
    """Sequence-numbered ICMP probes from the peer to the guest at *rate_hz*."""

    def __init__(self, exec_prefix: list[str], iface: str, src_mac: str, src_ip: str, dst_ip: str,
                 dst_mac: str, rate_hz: float, log_path: Path) -> None:
        template = build_template(src_mac, dst_mac, src_ip, dst_ip)
        super().__init__(_module_argv(exec_prefix, "harness.traffic.probe_main", "--iface", iface,
                                      "--template", template.hex(), "--dst-ip", dst_ip, "--rate", str(rate_hz)),
                         log_path)

    def wait_reply(self, timeout: float, after: float = 0.0) -> float | None:
        """Wait for a reply received after epoch time *after*; its time, or None."""
        line = self.wait_for_line(lambda ln: ln.startswith('{"r"') and json.loads(ln)["t"] > after, timeout)
        return None if line is None else float(json.loads(line)["t"])

    def result(self) -> ProbeLog:
        return parse_probe_log(self.stop())


class PathRecorder(Protocol):
    """What a case needs of a path capture, whatever the topology records it with."""

    def wait_ready(self, timeout: float = 10.0) -> None: ...

    def request_stop(self) -> None: ...

    def result(self) -> list[PathSeen]: ...


class PathCapture(RecorderProcess):
    """Which data path carried each reply: capture on the interfaces named by *ports* (pattern → path)."""

    def __init__(self, exec_prefix: list[str], guest_ip: str, ports: dict[str, str], log_path: Path,
                 pcap: str | None = None) -> None:
        port_args = [arg for pattern, path in ports.items() for arg in ("--port", f"{pattern}={path}")]
        # The pcapng beside the log is evidence: the guest's frames on every interface, with their names.
        # (*pcap*: where the capture writes it instead, on a machine that copies it there after.)
        super().__init__(_module_argv(exec_prefix, "harness.traffic.capture_main", "--guest-ip", guest_ip,
                                      "--pcap", pcap or str(log_path.with_suffix(".pcapng")), *port_args), log_path)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the capture listens (started separately: other work can overlap its start-up)."""
        if self.wait_for_line(lambda ln: ln.startswith('{"ready"'), timeout) is None:
            self.stop()
            raise HarnessError(f"path capture did not start within {timeout:.0f} s")

    def result(self) -> list[PathSeen]:
        return parse_capture_log(self.stop())
