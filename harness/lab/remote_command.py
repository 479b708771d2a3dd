"""A program on a lab host, run as if it were a local child process.

The traffic peer's programs (the probe sender, the path capture, the iperf3
client) are local subprocesses that print to a log, started with the peer's
*exec prefix* in front of their argv (``ip netns exec peer`` in the flat
topology). When the inventory puts the peer on a lab host, the prefix is this
module::

    python -m harness.lab.remote_command --inventory lab.toml --host l1a --files /run/fohx/x \\
        [--netns peer] [--clock-offset 0.012] [--collect REMOTE=LOCAL] -- ARGV...

It runs ARGV on that host over SSH, its stdout and stderr coming back as its
own; SIGTERM or SIGINT here is passed on to the remote program, and the exit
status comes back. A ``python -m harness.*`` argv runs the host's ``python3``
on a copy of the harness's traffic modules (standard library only), staged
once under ``--files``, where the program's pid file also stays while it runs
(the bed's cleanup kills what is listed there). The recorders' JSON lines carry epoch times (``"t"``)
of the host's clock; they are put on the harness's clock (``--clock-offset``,
the host's clock minus ours), as QMP events are. Files named by ``--collect``
are copied here once the program ended and removed there.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import select
import signal
import sys
import tempfile
import zipfile
from pathlib import Path
from types import FrameType

import paramiko

from harness.errors import HarnessError
from harness.lab.doctor import connect
from harness.lab.inventory import LOCAL, load_inventory
from harness.lab.ssh import SSHHost

PACKAGE = Path(__file__).parent.parent  # harness/, what the bundle's paths are relative to
# The peer's python programs (the probe sender, the path capture) and what they import: the standard
# library besides (tests/unit/test_remote_command.py checks).
BUNDLED = ("__init__.py", "errors.py", "traffic/__init__.py", "traffic/probe_main.py", "traffic/capture_main.py",
           "traffic/icmp.py", "traffic/rawsock.py", "traffic/pcapng.py")
READ_CHUNK = 65536
POLL_S = 0.1


def traffic_bundle() -> bytes:
    """The harness's traffic modules as a zip for PYTHONPATH; the same bytes for the same sources."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for pattern in BUNDLED:
            for path in sorted(PACKAGE.glob(pattern)):
                info = zipfile.ZipInfo(f"harness/{path.relative_to(PACKAGE)}", date_time=(1980, 1, 1, 0, 0, 0))
                bundle.writestr(info, path.read_bytes())
    return out.getvalue()


def runs_harness_module(argv: list[str]) -> bool:
    """Whether *argv* is ``<this python> -m harness.*`` (what needs the bundle on the host). Pure."""
    return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" and argv[2].startswith("harness.")


def remote_argv(argv: list[str], bundle: str, netns: str | None) -> list[str]:
    """*argv* as the host runs it: a ``<this python> -m harness.*`` on the bundle, in *netns*. Pure."""
    if runs_harness_module(argv):
        argv = ["env", f"PYTHONPATH={bundle}", "python3", *argv[1:]]
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def on_our_clock(line: bytes, clock_offset_s: float) -> bytes:
    """A recorder's JSON line with its time ``"t"`` moved from the host's clock to ours; other lines as
    they are. Pure."""
    if not clock_offset_s or not line.startswith(b"{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or not isinstance(record.get("t"), float | int):
        return line
    record["t"] = round(record["t"] - clock_offset_s, 9)
    return json.dumps(record, separators=(", ", ": ")).encode() + b"\n"


class Relay:
    """Copies the remote program's output here, line by line for stdout (to re-time it)."""

    def __init__(self, chan: paramiko.Channel, clock_offset_s: float) -> None:
        self._chan, self._offset = chan, clock_offset_s
        self._pending = b""

    def pump(self, timeout: float) -> bool:
        """Copy what arrived within *timeout*; False once the program ended and all of it is here."""
        select.select([self._chan], [], [], timeout)
        ended = self._chan.exit_status_ready() and self._chan.eof_received  # checked before the last reads
        while self._chan.recv_stderr_ready():
            sys.stderr.buffer.write(self._chan.recv_stderr(READ_CHUNK))
        sys.stderr.buffer.flush()
        while self._chan.recv_ready():
            *lines, self._pending = (self._pending + self._chan.recv(READ_CHUNK)).split(b"\n")
            sys.stdout.buffer.write(b"".join(on_our_clock(line + b"\n", self._offset) for line in lines))
        if ended:
            sys.stdout.buffer.write(self._pending)
        sys.stdout.buffer.flush()
        return not ended


def stage_bundle(host: SSHHost, files: str) -> str:
    """The bundle's path on *host* under *files*, copied there unless it already is (named by content)."""
    data = traffic_bundle()
    remote = f"{files}/harness-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    if host.run(["test", "-s", remote]).rc != 0:
        with tempfile.NamedTemporaryFile(suffix=".zip") as local:
            local.write(data)
            local.flush()
            host.put_file(Path(local.name), remote)
    return remote


def collect(host: SSHHost, remote: str, local: Path) -> None:
    try:
        local.write_bytes(host.take_file(remote, f"copying {remote}", timeout=120.0))
    except HarnessError as e:
        print(f"remote_command: {remote} not copied from {host.name}: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lab.remote_command", description=__doc__.split("\n")[0])
    parser.add_argument("--inventory", type=Path, required=True)
    parser.add_argument("--host", required=True, help="the inventory's name of the host")
    parser.add_argument("--files", required=True, help="a directory on the host for the staged modules and "
                        "the program's pid file")
    parser.add_argument("--netns", default=None)
    parser.add_argument("--clock-offset", type=float, default=0.0, help="the host's clock minus ours, seconds")
    parser.add_argument("--collect", action="append", default=[], metavar="REMOTE=LOCAL")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    program = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    try:
        spec = load_inventory(args.inventory).hosts[args.host]
    except (HarnessError, KeyError) as e:
        raise SystemExit(f"remote_command: host {args.host} of {args.inventory}: {e}") from None
    if spec.address == LOCAL:
        raise SystemExit(f"remote_command: host {args.host} is this machine: run the program directly")
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    host = connect(args.host, spec)
    assert isinstance(host, SSHHost)
    try:
        bundle = stage_bundle(host, args.files) if runs_harness_module(program) else ""
        chan, pid = host.start(remote_argv(program, bundle, args.netns))
        # Whoever cleans up the directory kills what is listed there, should this relay be killed outright.
        pid_file = f"{args.files}/{pid}.pid"
        host.write_file(pid_file, f"{pid}\n")
        relay, signalled = Relay(chan, args.clock_offset), False
        while relay.pump(POLL_S):
            if stop_requested and not signalled:
                host.run(["kill", "-TERM", str(pid)])
                signalled = True
        status = chan.recv_exit_status()
        host.run(["rm", "-f", "--", pid_file])
        for pair in args.collect:
            remote, _, local = pair.partition("=")
            collect(host, remote, Path(local))
    except HarnessError as e:
        print(f"remote_command: {e}", file=sys.stderr)
        return 255
    finally:
        host.close()
    if signalled and status in (-1, 128 + signal.SIGTERM):  # it died of our SIGTERM: so do we
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    return status if 0 <= status < 256 else 255


if __name__ == "__main__":
    sys.exit(main())
