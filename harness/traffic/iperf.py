"""iperf3 across a migration: server in the guest, client in the peer namespace, 100 ms intervals.

Debian 12's iperf3 (3.12) has no ``--json-stream``: the client's ``--json``
document is read once it exits. Interval times are relative to the test
start; they are placed on the host clock from the client's launch time
(iperf3 3.12's own start stamp has whole-second resolution), which puts them
a connection setup (a few ms) early.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.guest import Guest
from harness.proc import die_with_parent
from harness.timeline import ThroughputInterval

IPERF_PORT = 5201
# A stream with data unacknowledged this long is declared broken (iperf3 --snd-timeout,
# TCP_USER_TIMEOUT); Linux's own default would wait ~15 minutes. TCP backs its
# retransmissions off exponentially, so after an outage of G its next try may come about G
# after the network is back, plus a retransmission timeout: never declare a stream broken
# before twice the longest outage the limits allow plus that timeout, and never before
# MIN_SEND_TIMEOUT_MS (a healthy flat run under TCG kept data unacknowledged over 5 s).
MIN_SEND_TIMEOUT_MS = 15000
# Nested under TCG, a stream's srtt 0.58 s and rttvar 1.0 s made its RTO 4.6 s (2026-12-07).
RETRANSMISSION_TIMEOUT_MS = 5000


def send_timeout_ms(longest_allowed_outage_ms: float) -> int:
    """How long a stream's data may stay unacknowledged before it counts as broken, given the
    longest outage the case's limits allow (see :data:`MIN_SEND_TIMEOUT_MS`)."""
    return max(MIN_SEND_TIMEOUT_MS, math.ceil(2 * longest_allowed_outage_ms + RETRANSMISSION_TIMEOUT_MS))


@dataclass
class IperfResult:
    intervals: list[ThroughputInterval] = field(default_factory=list)
    survived: bool = False
    error: str | None = None
    retransmits: int | None = None
    mean_mbps: float | None = None


def parse_iperf_json(doc: dict[str, Any], launched: float) -> IperfResult:
    """Intervals on the host clock, whether the stream ran to its end, and its totals."""
    intervals = [
        ThroughputInterval(launched + i["sum"]["start"], launched + i["sum"]["end"],
                           float(i["sum"]["bits_per_second"]), i["sum"].get("retransmits"))
        for i in doc.get("intervals", [])
    ]
    error = doc.get("error")
    end = doc.get("end", {})
    sent = end.get("sum_sent") or end.get("sum") or {}
    planned = doc.get("start", {}).get("test_start", {}).get("duration")
    ran = intervals[-1].end - launched if intervals else 0.0
    survived = error is None and bool(intervals) and (planned is None or ran >= planned - 0.5)
    return IperfResult(intervals, survived, error, sent.get("retransmits"),
                       sent["bits_per_second"] / 1e6 if "bits_per_second" in sent else None)


def start_guest_server(guest: Guest, timeout: float = 20.0) -> None:
    """One-shot iperf3 server in the guest, daemonized (the control channel stays free), listening."""
    result = guest.channel.run(f"iperf3 -s -1 -D -p {IPERF_PORT}")
    if result.rc != 0:
        raise HarnessError(f"iperf3 server did not start in the guest ({result.rc}): {result.output}")
    # -D returns before the daemon listens; under TCG that can take longer than the client's connect.
    deadline = time.monotonic() + timeout
    while guest.channel.run(f"netstat -ltn | grep -q ':{IPERF_PORT} '").rc != 0:
        if time.monotonic() > deadline:
            raise HarnessError(f"iperf3 server in the guest not listening on {IPERF_PORT} after {timeout:.0f} s")
        time.sleep(0.1)


class IperfClient:
    """``iperf3 -c`` in the peer namespace for *duration_s*, reporting every 100 ms.

    TCP flows from the peer to the guest; UDP (*udp_bitrate*) from the guest to the peer.
    """

    def __init__(self, exec_prefix: list[str], server_ip: str, duration_s: float, log_path: Path,
                 udp_bitrate: str | None = None, send_timeout_ms: int = MIN_SEND_TIMEOUT_MS) -> None:
        self.log_path = log_path
        self.send_timeout_s = send_timeout_ms / 1000
        argv = [*exec_prefix, "iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t", str(duration_s),
                "-i", "0.1", "-J", "--connect-timeout", "5000", "--snd-timeout", str(send_timeout_ms)]
        if udp_bitrate:
            # Reversed: the guest sends, and the peer's intervals then show what arrived
            # (a UDP sender's own intervals would show its constant sending rate).
            argv += ["-u", "-b", udp_bitrate, "-R"]
        self.launched = time.time()
        with log_path.open("w") as out:
            self._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, preexec_fn=die_with_parent)
        self.duration_s = duration_s

    def result(self) -> IperfResult:
        """Wait for the client to end and parse its JSON: past its duration, a client that still waits
        on unacknowledged data ends with an error within its send timeout (a margin for the rest)."""
        grace_s = self.send_timeout_s + 15.0
        try:
            self._proc.wait(self.duration_s + grace_s)
        except subprocess.TimeoutExpired:
            self.stop()
            return IperfResult(error=f"iperf3 client still running {grace_s:.0f} s after its planned end")
        try:
            doc = json.loads(self.log_path.read_text())
        except json.JSONDecodeError:
            return IperfResult(error=f"iperf3 printed no JSON: {self.log_path.read_text()[-500:]}")
        return parse_iperf_json(doc, self.launched)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
