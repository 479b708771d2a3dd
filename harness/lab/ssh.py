"""Lab hypervisors over SSH (paramiko): :class:`SSHHost`, a :class:`~harness.hosts.Host` like the local one.

:class:`SSHHost` takes an argv list, never a shell line, as
:class:`~harness.hosts.LocalHost` does: it sends ``shlex.join(argv)`` so the
remote login shell sees every element as one literal word, whatever quotes,
``$(...)`` or ``;`` a configuration value holds.

:class:`SSHHost` is strict by default: key authentication only, the host key
checked against a known_hosts file (an unknown or changed key is a
:class:`~harness.errors.HostKeyError` whose message carries the fingerprint
and the fix), and a command that outlives its timeout is killed on the remote
side, not merely abandoned. Its socket can be made inside a network namespace
(:func:`netns_socket_factory`) when the host is only reachable from there.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.pkey import UnknownKeyType  # also paramiko.UnknownKeyType, but not in its stubs
from pyroute2 import netns as pyroute2_netns

from harness.errors import (
    ConfigError,
    DeadlineExceeded,
    HostAuthFailed,
    HostCommandFailed,
    HostKeyError,
    HostUnreachable,
)
from harness.guest import CommandResult
from harness.hosts import COMMAND_TIMEOUT_S, ArgvHost

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# A keepalive every so often keeps NAT and firewall state of an idle session alive.
KEEPALIVE_S = 10
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
# The remote shell first prints its pid, then becomes the command. sshd made that
# shell a session (and process group) leader, so the pid names the group to kill
# when the command outlives its timeout: closing the channel alone would leave it
# running (without a pty nothing sends it SIGHUP).
# Marked, because the login shell's rc files may print before it (a lab host's root
# .bashrc that warns, say): that preamble is not the command's output.
_REMOTE_PREFIX = "echo fohx-pid $$; exec "
_PID_LINE_RE = re.compile(rb"^fohx-pid (\d+)\r?\n", re.MULTILINE)
_KILL_TIMEOUT_S = 10.0
_CONNECT_HINTS = {
    errno.ECONNREFUSED: "nothing listens there: is sshd running, on that port?",
    errno.ENETUNREACH: "no route to that network from here",
    errno.EHOSTUNREACH: "the host does not answer on its network (down, or a wrong address)",
}

SocketFactory = Callable[[], socket.socket]


def netns_socket_factory(netns: str) -> SocketFactory:
    """TCP sockets made inside network namespace *netns*, for a host only reachable from there.

    A short-lived thread enters the namespace (setns(2) is per thread), makes
    the socket and ends; the socket stays in that namespace, and no other
    thread ever moves. Not pyroute2's ``create_socket``: it forks, and a forked
    copy of a pytest process that gets SIGTERM (pyroute2 ends its helper so)
    raises KeyboardInterrupt there (the plugin's handler) and runs the test's
    teardown in the copy. ``flags=0``: a missing namespace is an error, never
    created on the way.
    """
    def make() -> socket.socket:
        outcome: list[socket.socket | OSError] = []

        def enter_and_make() -> None:
            try:
                pyroute2_netns.setns(netns, flags=0, fork=False)
                outcome.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            except FileNotFoundError:
                outcome.append(FileNotFoundError(errno.ENOENT, f"network namespace {netns} does not exist"))
            except OSError as e:
                outcome.append(e)

        thread = threading.Thread(target=enter_and_make, name=f"socket-in-{netns}")
        thread.start()
        thread.join()
        if isinstance(outcome[0], OSError):
            raise outcome[0]
        return outcome[0]
    return make


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Decides about a host key known_hosts does not list (paramiko itself rejects a changed one)."""

    def __init__(self, on_unknown: Callable[[paramiko.PKey], None]) -> None:
        self._on_unknown = on_unknown

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self._on_unknown(key)


@dataclass
class SSHHost(ArgvHost):
    """A host reached over SSH as *user* with the private key file *key*.

    The connection is made on first use and kept; :meth:`close` drops it (a
    later command reconnects). *sock_factory* makes the unconnected TCP
    socket, e.g. :func:`netns_socket_factory`; by default it is made here.
    With *host_key_check* off, known_hosts is not read at all: any key is
    accepted (and logged), a changed one too.
    """

    name: str
    address: str
    key: Path
    port: int = 22
    user: str = "root"
    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    host_key_check: bool = True
    connect_timeout: float = CONNECT_TIMEOUT_S
    sock_factory: SocketFactory | None = None
    _client: paramiko.SSHClient | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def where(self) -> str:
        return f"host {self.name} ({self.address}:{self.port})"

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT_S, input: str | None = None) -> CommandResult:
        if not argv:
            raise ValueError("empty argv")
        log.debug("%s: run %s", self.name, shlex.join(argv))
        deadline = time.monotonic() + timeout
        chan = self._open_channel(_REMOTE_PREFIX + shlex.join(argv))
        try:
            _feed(chan, input)
            raw, finished = _collect(chan, deadline)
            pid, output = _split_pid(raw)
            text = output.decode(errors="replace")
            if not finished:
                self._kill_remote_group(pid)
                raise self._deadline(argv, timeout, text)
            # -1: no exit status, the command died of a signal (paramiko drops "exit-signal").
            return CommandResult(chan.recv_exit_status(), text)
        finally:
            chan.close()

    def put_file(self, local: Path, remote: str) -> None:
        """Copy *local* to *remote* over SFTP (the host's sshd must offer the sftp subsystem)."""
        try:
            sftp = paramiko.SFTPClient.from_transport(self.transport())
            assert sftp is not None  # None only if open_session returned None, which raises instead
            with sftp:
                sftp.put(str(local), remote)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HostUnreachable(f"{self.where}: copying {local} to {remote} over SFTP failed: {e} (the host's "
                                  "sshd needs 'Subsystem sftp internal-sftp' or its sftp-server)") from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def start(self, argv: list[str]) -> tuple[paramiko.Channel, int]:
        """Start *argv* and return once it runs: its channel (stdout and stderr apart, to read as they
        come; stdin closed) and its pid on the host, which leads its process group."""
        chan = self._open_channel(_REMOTE_PREFIX + shlex.join(argv), combine_stderr=False)
        chan.shutdown_write()
        chan.settimeout(self.connect_timeout)
        head = b""
        try:
            while (m := _PID_LINE_RE.search(head)) is None:
                byte = chan.recv(1)  # one at a time: what follows the pid line is the command's own
                if not byte:
                    raise HostCommandFailed(self.name, "starting it", argv, chan.recv_exit_status(),
                                            chan.recv_stderr(4096).decode(errors="replace"))
                head += byte
        except TimeoutError:
            chan.close()
            raise HostUnreachable(f"{self.where}: {argv[0]} did not start in {self.connect_timeout:.0f} s") from None
        chan.settimeout(None)
        return chan, int(m.group(1))

    def _open_channel(self, command: str, combine_stderr: bool = True) -> paramiko.Channel:
        transport = self.transport()
        try:
            chan = transport.open_session(timeout=self.connect_timeout)
            chan.set_combine_stderr(combine_stderr)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise HostUnreachable(f"{self.where}: the SSH session broke: {e}") from None
        return chan

    def _kill_remote_group(self, pid: bytes) -> None:
        """SIGKILL the process group a timed-out command leads (best effort: the timeout is what gets raised)."""
        if not pid.strip().isdigit():
            log.warning("%s: timed out before the command started; nothing to kill", self.where)
            return
        try:
            result = self.run(["kill", "-KILL", "--", f"-{pid.decode().strip()}"], timeout=_KILL_TIMEOUT_S)
        except (HostUnreachable, DeadlineExceeded) as e:
            log.warning("%s: could not kill the timed-out command: %s", self.where, e)
            return
        if result.rc != 0:
            log.warning("%s: killing the timed-out command's group %s: %s", self.where, pid, result.output)

    def transport(self) -> paramiko.Transport:
        """The SSH connection (made now if there is none, or it broke): sessions and tunnels share it."""
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            self.close()
            self._client = self._connect()
            transport = self._client.get_transport()
            assert transport is not None  # connect() succeeded
        return transport

    def _connect(self) -> paramiko.SSHClient:
        pkey = self._load_key()
        client = paramiko.SSHClient()
        known_hosts = self.known_hosts.expanduser()
        if self.host_key_check and known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(_HostKeyPolicy(self._unknown_key))
        sock = self._open_socket()
        t = self.connect_timeout
        error: Exception
        try:
            client.connect(self.address, self.port, username=self.user, pkey=pkey, sock=sock, timeout=t,
                           banner_timeout=t, auth_timeout=t, channel_timeout=t, allow_agent=False,
                           look_for_keys=False)
        except paramiko.BadHostKeyException as e:
            error = HostKeyError(self._changed_key_message(e.key, e.expected_key))
        except paramiko.AuthenticationException as e:
            error = HostAuthFailed(
                f"{self.where}: user {self.user} was refused with key {self.key} ({e}). Fix: add {self.key}.pub "
                f"to ~{self.user}/.ssh/authorized_keys on {self.address}, or name the right key in the inventory")
        except (paramiko.SSHException, OSError, EOFError) as e:
            error = HostUnreachable(f"{self.where}: no SSH session: {str(e) or type(e).__name__}")
        except BaseException:  # HostKeyError from the policy, Ctrl-C
            client.close()
            raise
        else:
            transport = client.get_transport()
            assert transport is not None  # connect() made it
            transport.set_keepalive(KEEPALIVE_S)
            log.info("%s: connected as %s", self.where, self.user)
            return client
        client.close()
        raise error

    def _load_key(self) -> paramiko.PKey:
        """The private key, loaded here so that a bad key file is a config error, not a refused login."""
        path = self.key.expanduser()
        try:
            return paramiko.PKey.from_path(path)
        except FileNotFoundError:
            raise ConfigError(f"{self.where}: key file {path} does not exist: give the private key's path") from None
        except (paramiko.PasswordRequiredException, TypeError):  # TypeError: cryptography's "password-protected"
            raise ConfigError(f"{self.where}: key file {path} is encrypted; the harness needs a key without "
                              f"passphrase (make one for the lab: ssh-keygen -t ed25519 -N '' -f FILE)") from None
        except (paramiko.SSHException, UnknownKeyType, OSError, ValueError) as e:
            raise ConfigError(f"{self.where}: key file {path} is not a usable private key: {e}") from None

    def _open_socket(self) -> socket.socket:
        try:
            if self.sock_factory is None:
                return socket.create_connection((self.address, self.port), timeout=self.connect_timeout)
            sock = self.sock_factory()
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect((self.address, self.port))
            except BaseException:
                sock.close()
                raise
            return sock
        except TimeoutError:
            raise HostUnreachable(f"{self.where}: no answer within {self.connect_timeout:g} s "
                                  "(the host is down, or a firewall drops the packets)") from None
        except OSError as e:
            hint = _CONNECT_HINTS.get(e.errno or 0, "check the address and port in the inventory")
            raise HostUnreachable(f"{self.where}: cannot connect: {e.strerror or e}: {hint}") from None

    def _known_hosts_name(self) -> str:
        """The host's name as known_hosts and ssh-keygen -R spell it."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def _unknown_key(self, key: paramiko.PKey) -> None:
        offered = f"{key.get_name()} {key.fingerprint}"
        if not self.host_key_check:
            log.warning("%s: host_key_check is off: accepting %s unchecked", self.where, offered)
            return
        kh = self.known_hosts.expanduser()
        raise HostKeyError(
            f"{self.where}: unknown host key: it offered {offered}, which {kh} does not list for "
            f"{self._known_hosts_name()}; nothing was run there. Fix: compare that fingerprint with "
            f"'ssh-keygen -lf' of the host's /etc/ssh/ssh_host_*_key.pub, then run "
            f"'ssh-keyscan -p {self.port} {self.address} >> {kh}'; or, for a throwaway lab only, set "
            f"host_key_check = false for host {self.name} in the inventory")

    def _changed_key_message(self, got: paramiko.PKey, expected: paramiko.PKey) -> str:
        kh = self.known_hosts.expanduser()
        return (
            f"{self.where}: HOST KEY CHANGED: it offered {got.get_name()} {got.fingerprint}, but {kh} has "
            f"{expected.get_name()} {expected.fingerprint} for {self._known_hosts_name()}: the host was "
            f"reinstalled, or someone is in between; nothing was run there. Fix, if you know it was reinstalled: "
            f"check the new fingerprint on the host, then run 'ssh-keygen -R \"{self._known_hosts_name()}\" "
            f"-f {kh}' and 'ssh-keyscan -p {self.port} {self.address} >> {kh}'; or, for a throwaway lab only, "
            f"set host_key_check = false for host {self.name} in the inventory")


def _feed(chan: paramiko.Channel, text: str | None) -> None:
    """Send *text* as the command's stdin, then EOF.

    From a thread: a command that answers while it reads (tee) would otherwise
    fill the SSH window while this side still sends, and both would wait.
    """
    if text is None:
        chan.shutdown_write()
        return

    def send() -> None:
        with contextlib.suppress(OSError, paramiko.SSHException):  # the channel closed: the command is over
            chan.sendall(text.encode())
            chan.shutdown_write()

    threading.Thread(target=send, name="ssh-stdin", daemon=True).start()


def _split_pid(raw: bytes) -> tuple[bytes, bytes]:
    """(the remote shell's pid, the command's output after the line that announced it); (b"", raw)
    if it never came. What the login shell printed before it is logged and dropped."""
    m = _PID_LINE_RE.search(raw)
    if m is None:
        return b"", raw
    if m.start():
        log.debug("login shell said before the command: %r", raw[:m.start()])
    return m.group(1), raw[m.end():]


def _collect(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bool]:
    """All output until EOF and exit status, or until *deadline*; and whether the command finished."""
    chunks: list[bytes] = []
    while (remaining := deadline - time.monotonic()) > 0:
        chan.settimeout(remaining)
        try:
            data = chan.recv(65536)
        except TimeoutError:
            break
        if not data:
            return b"".join(chunks), chan.status_event.wait(max(0.0, deadline - time.monotonic()))
        chunks.append(data)
    return b"".join(chunks), False
