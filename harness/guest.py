"""The guest control channel and what the harness reads from the guest.

The channel is the guest's second serial port, exposed by QEMU as a unix
socket (see :func:`harness.vm.build_argv`). It does not use the network under
test, and it migrates with the guest: after a migration the harness simply
connects to the destination QEMU's socket. The agent on the other side is
``images/guest/harness-agent``; its framing is parsed here.
"""

from __future__ import annotations

import base64
import itertools
import logging
import re
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ControlChannelLost, DeadlineExceeded, GuestBootFailed, GuestError, GuestSilent

log = logging.getLogger(__name__)

_RESULT_RE = re.compile(rb"^@@R (\d+) (\d+)$")
_END_RE = re.compile(rb"^@@E (\d+)$")
_READY = b"@@READY"  # the agent's first line
# wait_ready's probes: again after this much silence, doubling up to the maximum.
PROBE_INTERVAL_S = 1.0
MAX_PROBE_INTERVAL_S = 30.0
# How long a guest command may take unless its caller says otherwise.
COMMAND_TIMEOUT_S = 20.0
# A standby without a failover master this long stays so: its device did not offer failover
# (the probe creates the master right after registering the standby, well within it).
NO_MASTER_GRACE_S = 2.0


@dataclass(frozen=True)
class CommandResult:
    rc: int
    output: str


class ControlChannel:
    """Line protocol to the guest agent over a QEMU socket chardev."""

    def __init__(self, socket_path: Path, transcript: Path | None = None,
                 qemu_running: Callable[[], bool] = lambda: True) -> None:
        self.socket_path = socket_path
        # Tells a lost channel (environmental: retried) from a QEMU that died (a finding).
        self.qemu_running = qemu_running
        self._sock: socket.socket | None = None
        self._buf = b""
        self._ids = itertools.count(1)
        self._transcript = transcript

    def connect(self) -> None:
        self.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(self.socket_path))
        self._sock = s
        self._buf = b""

    def retarget(self, socket_path: Path, qemu_running: Callable[[], bool]) -> None:
        """Talk to the guest through another QEMU's socket from now on (after a migration)."""
        self.close()
        self.socket_path = socket_path
        self.qemu_running = qemu_running

    def _lost(self, what: str) -> GuestError:
        if self.qemu_running():
            return ControlChannelLost(f"control channel {self.socket_path}: {what} (QEMU still running)")
        return GuestError(f"control channel {self.socket_path}: {what}; QEMU has exited")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _log(self, text: str) -> None:
        if self._transcript is not None:
            with self._transcript.open("a", encoding="utf-8") as f:
                f.write(f"{time.time():.6f} {text}\n")

    def _readline(self, deadline: float, on_idle: Callable[[], None] | None = None) -> bytes | None:
        """The next line, or None at *deadline*; *on_idle* runs after each silent second."""
        assert self._sock is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._sock], [], [], left if on_idle is None else min(left, 1.0))
            if not ready:
                if on_idle is not None:
                    on_idle()
                continue
            chunk = self._sock.recv(65536)
            if not chunk:
                raise self._lost("closed by QEMU")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.rstrip(b"\r")

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT_S) -> CommandResult:
        """Run *command* with the guest's ``sh``; return its status and output."""
        req_id = self._send(command)
        answer = self._answer({req_id}, time.monotonic() + timeout, command, timeout)
        assert answer is not None
        return answer

    def _send(self, command: str) -> int:
        req_id = next(self._ids)
        self._log(f"> {req_id} {command}")
        payload = base64.b64encode(command.encode()).decode()
        try:
            if self._sock is None:
                self.connect()
            assert self._sock is not None
            self._sock.sendall(f"{req_id} {payload}\n".encode())
        except OSError as e:  # QEMU gone, or its socket not there (yet)
            self.close()
            raise self._lost(str(e)) from e
        return req_id

    def _answer(self, ids: set[int], deadline: float, command: str, timeout: float, *,
                until_ready: bool = False, on_idle: Callable[[], None] | None = None) -> CommandResult | None:
        """Read until the answer to one of *ids* is complete (None: the agent announced
        itself first, with *until_ready*). Other lines are echoes or stale answers."""
        req_id: int | None = None
        rc = 0
        body: list[bytes] = []
        while True:
            line = self._readline(deadline, on_idle)
            if line is None:
                raise GuestSilent(f"guest did not answer {command!r} within {timeout:.0f} s")
            if req_id is None:
                if until_ready and line.endswith(_READY):  # maybe after the tty's echo of a probe
                    return None
                m = _RESULT_RE.match(line)
                if m and int(m.group(1)) in ids:
                    req_id, rc = int(m.group(1)), int(m.group(2))
                continue
            m = _END_RE.match(line)
            if m and int(m.group(1)) == req_id:
                break
            body.append(line)
        output = base64.b64decode(b"".join(body)).decode(errors="replace")
        self._log(f"< {req_id} rc={rc} {output!r}")
        return CommandResult(rc, output)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the agent answers; the guest may still be booting.

        Probes do not pile up: what is sent before the agent runs waits in the
        serial line, and a slow guest (nested TCG: seconds a command) would
        answer a probe a second for minutes. The tty may garble or drop what
        arrives while the agent opens it, so a probe goes out on each
        connection, again when the agent announces itself (``@@READY``), and
        again after 1, 2, 4 ... s of silence; an answer to any of them will do.
        """
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        probes: set[int] = set()
        interval, next_probe = PROBE_INTERVAL_S, 0.0

        def probe() -> None:
            nonlocal interval, next_probe
            probes.add(self._send("echo ok"))
            next_probe = time.monotonic() + interval
            interval = min(2 * interval, MAX_PROBE_INTERVAL_S)

        def check_qemu() -> None:
            if not self.qemu_running():
                raise GuestBootFailed(f"QEMU exited while the guest booted ({last_error or 'no answer yet'})")

        def still_booting() -> None:
            check_qemu()
            if time.monotonic() >= next_probe:
                probe()

        while time.monotonic() < deadline:
            check_qemu()
            try:
                if self._sock is None:
                    self.connect()
                probe()
                while True:
                    answer = self._answer(probes, deadline, "echo ok", timeout, until_ready=True,
                                          on_idle=still_booting)
                    if answer is not None and answer.output == "ok":
                        return
                    probe()
            except DeadlineExceeded as e:
                last_error = e
            except (OSError, GuestError) as e:
                last_error = e
                self.close()
                time.sleep(0.2)
        raise GuestBootFailed(f"guest agent not ready within {timeout:.0f} s ({last_error or 'no answer'})")


@dataclass(frozen=True)
class GuestLink:
    """One guest network interface, as ``fo-state`` prints it."""

    name: str
    mac: str
    driver: str
    master: str | None
    operstate: str


def parse_link_state(text: str) -> list[GuestLink]:
    """Parse ``fo-state`` output (``iface name=.. mac=.. driver=.. master=.. operstate=..``)."""
    links = []
    for line in text.splitlines():
        if not line.startswith("iface "):
            continue
        fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        links.append(
            GuestLink(
                name=fields["name"],
                mac=fields["mac"].lower(),
                driver=fields.get("driver", "-"),
                master=None if fields.get("master", "-") == "-" else fields["master"],
                operstate=fields.get("operstate", "unknown"),
            )
        )
    return links


@dataclass(frozen=True)
class FailoverView:
    """The guest's failover roles for one MAC (roles as cloud-init derives them)."""

    master: GuestLink | None
    standby: GuestLink | None
    primary: GuestLink | None

    @property
    def primary_enslaved(self) -> bool:
        return self.master is not None and self.primary is not None and self.primary.master == self.master.name

    @property
    def primary_active(self) -> bool:
        """Enslaved and link up: net_failover transmits on the primary only then."""
        return self.primary_enslaved and self.primary is not None and self.primary.operstate == "up"

    @property
    def cannot_enslave(self) -> bool:
        """A virtio-net device with the failover MAC but no failover master: nothing can enslave a primary."""
        return self.master is None and self.standby is not None

    def describe(self) -> str:
        def name(link: GuestLink | None) -> str:
            return f"{link.name}({link.driver},{link.operstate})" if link else "none"

        described = f"master={name(self.master)} standby={name(self.standby)} primary={name(self.primary)}"
        if self.cannot_enslave:
            described += " (no failover master: the standby's device did not offer failover)"
        return described


def failover_view(links: list[GuestLink], mac: str) -> FailoverView:
    """Classify the interfaces carrying *mac*: the master has slaves, the standby is its virtio slave."""
    mac = mac.lower()
    same = [link for link in links if link.mac == mac]
    masters = {link.master for link in same if link.master}
    master = next((link for link in same if link.name in masters), None)
    standby = primary = None
    for link in same:
        if master is None or link.master != master.name:
            continue
        if link.driver == "virtio_net":
            standby = link
        else:
            primary = link
    if master is None:
        # No failover: the plain virtio_net device, if any, is reported as standby.
        standby = next((link for link in same if link.driver == "virtio_net"), None)
        primary = next((link for link in same if link.driver not in ("virtio_net", "-")), None)
    return FailoverView(master, standby, primary)


class Guest:
    """What tests ask of the guest, through its control channel."""

    def __init__(self, channel: ControlChannel, failover_mac: str) -> None:
        self.channel = channel
        self.failover_mac = failover_mac

    def links(self, timeout: float = COMMAND_TIMEOUT_S) -> list[GuestLink]:
        """Every network interface of the guest."""
        result = self.channel.run("fo-state", timeout=timeout)
        if result.rc != 0:
            raise GuestError(f"fo-state failed ({result.rc}): {result.output}")
        return parse_link_state(result.output)

    def failover(self, timeout: float = COMMAND_TIMEOUT_S) -> FailoverView:
        return failover_view(self.links(timeout), self.failover_mac)

    def wait_primary_active(self, timeout: float) -> FailoverView:
        """Poll until the primary is enslaved and up; return the last view either way.

        A guest busy plugging its primary may answer slowly (seconds under
        nested TCG): each poll may take what is left of *timeout*. A guest
        whose standby has no failover master for :data:`NO_MASTER_GRACE_S`
        (its device did not offer failover) can never enslave a primary: the
        wait ends there, not at *timeout*.
        """
        deadline = time.monotonic() + timeout
        view = self.failover(max(timeout, COMMAND_TIMEOUT_S))
        masterless_since: float | None = None
        while not view.primary_active and (left := deadline - time.monotonic()) > 0:
            if view.cannot_enslave:
                masterless_since = masterless_since or time.monotonic()
                if time.monotonic() - masterless_since >= NO_MASTER_GRACE_S:
                    break
            else:
                masterless_since = None
            time.sleep(0.1)
            view = self.failover(max(left, COMMAND_TIMEOUT_S))
        return view

    def dmesg(self, timeout: float = COMMAND_TIMEOUT_S) -> str:
        return self.channel.run("dmesg", timeout=timeout).output

    def clock_sync(self, samples: int = 3) -> tuple[ClockSync, str]:
        """Relate the guest kernel log clock to the host clock; also return the log's failover lines.

        Each sample writes a marker to ``/dev/kmsg``, so the guest stamps it
        with the very clock its dmesg lines carry; the host brackets the write
        with its own clock. The shortest round trip bounds the error. Only the
        markers and the lines about failover are read back (the whole log is
        tens of kilobytes over the serial channel); callers reuse the latter.
        """
        token = f"harness-sync-{time.monotonic_ns()}"
        brackets = []
        for i in range(samples):
            before = time.time()
            self.channel.run(f"echo {token}-{i} > /dev/kmsg")
            brackets.append((before, time.time()))
        kernel_log = self.channel.run(f"dmesg | grep -e {token} -e failover", timeout=20).output
        stamps = {msg.rsplit("-", 1)[1]: ts for ts, msg in parse_dmesg(kernel_log) if msg.startswith(token)}
        pairs = [(b, stamps[str(i)], a) for i, (b, a) in enumerate(brackets) if str(i) in stamps]
        if not pairs:
            raise GuestError("clock sync markers did not appear in the guest's kernel log")
        return best_clock_sync(pairs), kernel_log


_DMESG_RE = re.compile(r"^\[\s*(\d+\.\d+)\]\s+(.*)$")
_LINK_RE = re.compile(r"failover (primary|standby) slave:(\S+) (registered|unregistered)")


def parse_dmesg(text: str) -> list[tuple[float, str]]:
    """``[  8.279339] message`` lines → (kernel timestamp s, message)."""
    out = []
    for line in text.splitlines():
        m = _DMESG_RE.match(line.strip())
        if m:
            out.append((float(m.group(1)), m.group(2)))
    return out


def failover_link_events(text: str) -> list[tuple[float, str, str]]:
    """The guest kernel's failover slave (un)registrations from dmesg: (kernel time, kind, interface)."""
    events = []
    for ts, message in parse_dmesg(text):
        m = _LINK_RE.search(message)
        if m:
            role, iface, what = m.groups()
            events.append((ts, f"{role}-{what}", iface))
    return events


@dataclass(frozen=True)
class ClockSync:
    """Host time = guest kernel log time + :attr:`offset_s`, within ± :attr:`uncertainty_s`."""

    offset_s: float
    uncertainty_s: float


def best_clock_sync(samples: list[tuple[float, float, float]]) -> ClockSync:
    """From (host before, guest kernel time, host after) samples, the one with the shortest round trip."""
    before, guest_ts, after = min(samples, key=lambda s: s[2] - s[0])
    return ClockSync((before + after) / 2 - guest_ts, (after - before) / 2)
