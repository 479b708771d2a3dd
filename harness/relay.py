"""A byte relay between a unix socket and a TCP address, run inside a test namespace.

The nested topology's L2 QEMUs run inside L1 VMs, reachable only over the
management bridge in the test's bridge namespace. The harness talks to every
QEMU and guest agent through unix sockets (:class:`harness.qmp.QMPSession`
listens, :class:`harness.guest.ControlChannel` connects); one relay process per
socket, started with the namespace's ``ip netns exec`` prefix, carries those
bytes to and from TCP on the management link. It prints ``ready`` once it
listens, and relays each accepted connection until either side closes.

    python -m harness.relay tcp-to-unix HOST:PORT UNIX_PATH   # QEMU connects out (QMP)
    python -m harness.relay unix-to-tcp UNIX_PATH HOST:PORT   # the harness connects in (agent)
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from harness.errors import VMError
from harness.proc import die_with_parent

READY_TIMEOUT_S = 10.0


class Relay:
    """One relay process (the harness side): started in a namespace, ready when this returns."""

    def __init__(self, exec_prefix: list[str], mode: str, source: str, target: str, log_path: Path) -> None:
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen([*exec_prefix, sys.executable, "-m", "harness.relay", mode, source, target],
                                     stdout=subprocess.PIPE, stderr=self._log, start_new_session=True,
                                     preexec_fn=die_with_parent)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.close()
            raise VMError(f"relay {mode} {source} {target} did not start (see {log_path})")

    def close(self) -> None:
        """Kill the relay. Idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:  # one side closed: close both, so the other pump ends too
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _serve(listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
    while True:
        accepted, _ = listener.accept()
        try:
            other = connect()
        except OSError as e:
            print(f"relay: cannot connect onwards: {e}", file=sys.stderr, flush=True)
            accepted.close()
            continue
        for a, b in ((accepted, other), (other, accepted)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _tcp_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("tcp-to-unix", "unix-to-tcp"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, source, target = argv
    if mode == "tcp-to-unix":
        listener = socket.create_server(_tcp_address(source))

        def connect() -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(target)
            return s
    else:
        Path(source).unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(source)
        listener.listen()

        def connect() -> socket.socket:
            s = socket.create_connection(_tcp_address(target), timeout=10)
            s.settimeout(None)  # the timeout was for connecting; the agent may stay silent for long
            return s
    print("ready", flush=True)
    _serve(listener, connect)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
