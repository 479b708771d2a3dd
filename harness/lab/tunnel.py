"""Byte streams between the harness's unix sockets and a lab host's loopback, carried by SSH.

The harness talks to every QEMU and guest agent through unix sockets
(:class:`harness.qmp.QMPSession` listens, :class:`harness.guest.ControlChannel`
connects). A QEMU on a lab host reached over SSH binds only that host's
``127.0.0.1``, so nothing of it is exposed on the lab's networks; the host's
existing SSH connection carries the bytes, as ``ssh -L`` and ``ssh -R`` do:

- :class:`LocalForward`: connections to a local unix socket become
  ``direct-tcpip`` channels to a TCP port on the host's loopback (the agent's
  chardev, which listens).
- :class:`RemoteForward`: sshd listens on a port of the host's loopback that
  it picks; connections there are joined to a local unix socket (QMP, whose
  chardev connects out to the harness).

Both are the SSH counterparts of :mod:`harness.relay`'s two modes. The host's
sshd must allow TCP forwarding (``AllowTcpForwarding``, on by default); where
it does not, the error says so. :meth:`close` is idempotent and ends every
stream it carried.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from pathlib import Path

import paramiko

from harness.errors import HostUnreachable
from harness.lab.ssh import SSHHost

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_CHUNK = 65536
# How often a pump looks up from select() to see whether its tunnel was closed.
_POLL_S = 0.5
_FORWARDING_FIX = "set 'AllowTcpForwarding yes' (the default) in its sshd_config"

Endpoint = socket.socket | paramiko.Channel


class _Pumps:
    """The byte pumps of one tunnel: a thread per joined pair, all ended by :meth:`close`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Endpoint] = set()
        self._threads: list[threading.Thread] = []

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def join(self, a: Endpoint, b: Endpoint) -> None:
        """Copy bytes both ways between *a* and *b* until either side closes (then close both)."""
        with self._lock:
            if self.closed:
                a.close()
                b.close()
                return
            self._open |= {a, b}
            thread = threading.Thread(target=self._pump, args=(a, b), name=f"tunnel {self.name}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _pump(self, a: Endpoint, b: Endpoint) -> None:
        peer = {a: b, b: a}
        try:
            while not self.closed:
                readable, _, _ = select.select([a, b], [], [], _POLL_S)
                for source in readable:
                    data = source.recv(_CHUNK)
                    if not data:
                        return
                    peer[source].sendall(data)
        except OSError as e:  # a side reset: the stream is over either way
            log.debug("tunnel %s: %s", self.name, e)
        finally:
            with self._lock:
                self._open -= {a, b}
            a.close()
            b.close()

    def close(self) -> None:
        """End every stream and wait for the pumps. Idempotent."""
        with self._lock:
            self._closed.set()
            endpoints, threads = list(self._open), list(self._threads)
        for endpoint in endpoints:
            with contextlib.suppress(OSError):
                endpoint.close()
        for thread in threads:
            thread.join(timeout=2 * _POLL_S + 1)


class LocalForward:
    """Connections to the unix socket *local_path* reach TCP *remote_port* on *host*'s loopback.

    The socket listens when this returns. A connection whose channel the host
    refuses (nothing listens there yet) is closed at once, as a refused TCP
    connect would be; the harness's channels retry.
    """

    def __init__(self, host: SSHHost, local_path: Path, remote_port: int) -> None:
        self.host, self.local_path, self.remote_port = host, local_path, remote_port
        self._pumps = _Pumps(f"{local_path.name} -> {host.name}:{remote_port}")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(str(local_path))
            self._listener.listen(4)
        except OSError:
            self._listener.close()
            raise
        self._accepter = threading.Thread(target=self._accept, name=f"tunnel {self._pumps.name}", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._pumps.closed:
            readable, _, _ = select.select([self._listener], [], [], _POLL_S)
            if not readable:
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed under us
                return
            try:
                channel = self.host.transport().open_channel(
                    "direct-tcpip", (LOOPBACK, self.remote_port), (LOOPBACK, 0), timeout=self.host.connect_timeout)
            except paramiko.ChannelException as e:
                refused = e.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
                log.log(logging.WARNING if refused else logging.INFO, "tunnel %s: the host did not open the "
                        "channel: %s%s", self._pumps.name, e, f" ({_FORWARDING_FIX})" if refused else "")
                conn.close()
                continue
            except (paramiko.SSHException, OSError, EOFError, HostUnreachable) as e:
                log.warning("tunnel %s: %s", self._pumps.name, e)
                conn.close()
                continue
            self._pumps.join(conn, channel)

    def close(self) -> None:
        """Stop listening, end every stream, remove the socket. Idempotent."""
        self._pumps.close()
        self._listener.close()
        self._accepter.join(timeout=2 * _POLL_S + 1)
        self.local_path.unlink(missing_ok=True)


class RemoteForward:
    """Connections to :attr:`remote_port` on *host*'s loopback (sshd picks it) reach the unix socket *local_path*.

    Something must listen at *local_path* by the time a connection arrives;
    one that finds nobody is closed.
    """

    def __init__(self, host: SSHHost, local_path: Path) -> None:
        self.host, self.local_path = host, local_path
        self._transport = host.transport()
        try:
            self.remote_port: int = self._transport.request_port_forward(LOOPBACK, 0, handler=self._arrived)
        except paramiko.SSHException as e:
            raise HostUnreachable(f"{host.where} refused to listen on its {LOOPBACK} for the harness "
                                  f"(TCP forwarding, {e}): {_FORWARDING_FIX}") from None
        self._pumps = _Pumps(f"{host.name}:{self.remote_port} -> {local_path.name}")

    def _arrived(self, channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
        """paramiko's transport thread hands over each forwarded connection here: join it, do not block."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(self.local_path))
        except OSError as e:
            log.info("tunnel %s: nothing to join the connection to: %s", self._pumps.name, e)
            conn.close()
            channel.close()
            return
        self._pumps.join(conn, channel)

    def close(self) -> None:
        """Stop the host listening and end every stream. Idempotent."""
        if self._pumps.closed:
            return
        self._pumps.close()
        if self._transport.is_active():
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                self._transport.cancel_port_forward(LOOPBACK, self.remote_port)
