"""Host side of the timed probe: start it in the peer namespace, stop it, read its samples."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.errors import HarnessError
from harness.timeline import ProbeSample

log = logging.getLogger(__name__)


def parse_probe_log(lines: list[str]) -> list[ProbeSample]:
    """Pair ``s`` (sent) and ``r`` (reply) records by sequence.

    The first reply to a probe counts; later ones are duplicates and ignored here.
    """
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        if "s" in rec:
            sent[rec["s"]] = rec["t"]
        elif "r" in rec:
            received.setdefault(rec["r"], rec["t"])
    return [ProbeSample(seq, t, received.get(seq)) for seq, t in sorted(sent.items())]


class Prober:
    """A running probe stream; :meth:`stop` ends it and returns the samples (idempotent)."""

    def __init__(self, exec_prefix: list[str], iface: str, src_mac: str, src_ip: str, dst_ip: str,
                 dst_mac: str, rate_hz: float, log_path: Path) -> None:
        self.log_path = log_path
        self._argv = exec_prefix + [
            sys.executable, "-m", "harness.traffic.probe_main", "--iface", iface, "--src-mac", src_mac,
            "--src-ip", src_ip, "--dst-ip", dst_ip, "--dst-mac", dst_mac, "--rate", str(rate_hz),
        ]
        self._out = log_path.open("w")
        self._err_path = log_path.with_suffix(".stderr")
        self._err = self._err_path.open("w")
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            self._argv, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL, start_new_session=True)
        self._samples: list[ProbeSample] | None = None

    def wait_reply(self, timeout: float, after: float = 0.0) -> float | None:
        """Wait (polling the log) for a reply received after epoch time *after*; its time, or None."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise HarnessError(f"probe exited early: {self._err_path.read_text()[-1000:]}")
            for line in self.log_path.read_text().splitlines():
                if line.startswith('{"r"') and line.endswith("}"):
                    t = json.loads(line)["t"]
                    if t > after:
                        return float(t)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def stop(self) -> list[ProbeSample]:
        if self._samples is not None:
            return self._samples
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            code = self._proc.returncode
            self._proc = None
            self._out.close()
            self._err.close()
            if code not in (0, -signal.SIGTERM):
                raise HarnessError(f"probe failed ({code}): {self._err_path.read_text()[-1000:]}")
        self._samples = parse_probe_log(self.log_path.read_text().splitlines())
        return self._samples
