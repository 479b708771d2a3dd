"""LocalForward and RemoteForward through a real sshd in a namespace of its own (:func:`ssh_lab`).

The far ends are real TCP sockets on the namespace's loopback, where a lab
host's QEMU would bind its QMP and agent chardevs.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import HostUnreachable
from harness.lab.ssh import SSHHost
from harness.lab.tunnel import LocalForward, RemoteForward
from harness.proc import die_with_parent
from tests.e2e.test_ssh_hosts import SSHD, SshLab, ssh_lab

ECHO_PORT = 7007
IDLE_PORT = 7008  # nothing listens there
# An echo server on the namespace's loopback: what an agent's listening chardev looks like from sshd.
ECHO_SERVER = f"""
import socket, threading
server = socket.create_server(("127.0.0.1", {ECHO_PORT}))
print("ready", flush=True)
def echo(conn):
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)
while True:
    threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
"""
# On the host: connect to the forwarded port, send argv[2], print what comes back (a QEMU connecting out).
CLIENT = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as conn:
    conn.sendall(sys.argv[2].encode())
    print(conn.recv(4096).decode())
"""

pytestmark = [
    pytest.mark.skipif(not SSHD.exists(), reason=f"no {SSHD}: 'make setup' installs openssh-server"),
]


def tunnel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tunnel ")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    with ssh_lab(tmp_path_factory.mktemp("sshd"), "tun") as lab:
        echo = subprocess.Popen([*lab.ns.exec_prefix(), sys.executable, "-c", ECHO_SERVER],
                                stdout=subprocess.PIPE, preexec_fn=die_with_parent)
        try:
            assert echo.stdout is not None and echo.stdout.readline() == b"ready\n"
            yield lab
        finally:
            echo.kill()
            echo.wait()
    assert lab.leftovers() == []


@pytest.fixture
def host(lab: SshLab) -> Iterator[SSHHost]:
    with lab.host() as host:
        yield host
    assert tunnel_threads() == []


def connect_unix(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(str(path))
    return conn


def test_local_forward_carries_each_connection_to_the_hosts_loopback(host: SSHHost, tmp_path: Path) -> None:
    forward = LocalForward(host, tmp_path / "agent.sock", ECHO_PORT)
    first, second = connect_unix(forward.local_path), connect_unix(forward.local_path)
    first.sendall(b"one")
    second.sendall(b"two" * 30000)  # more than one chunk
    assert first.recv(4096) == b"one"
    received = b""
    while len(received) < 90000:
        received += second.recv(65536)
    assert received == b"two" * 30000
    forward.close()
    assert first.recv(4096) == b"" and second.recv(4096) == b""  # close ends the streams
    assert not forward.local_path.exists()
    forward.close()  # idempotent


def test_local_forward_to_a_port_nobody_listens_on_closes_the_connection(host: SSHHost, tmp_path: Path) -> None:
    forward = LocalForward(host, tmp_path / "agent.sock", IDLE_PORT)
    try:
        conn = connect_unix(forward.local_path)
        assert conn.recv(4096) == b""  # as a refused TCP connect: the caller retries
        assert host.run(["true"]).rc == 0  # the SSH connection still serves
    finally:
        forward.close()


def test_remote_forward_joins_a_connection_on_the_hosts_loopback_to_a_local_socket(
        host: SSHHost, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "qmp.sock"))
    listener.listen(1)
    listener.settimeout(10)
    forward = RemoteForward(host, tmp_path / "qmp.sock")

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"got " + conn.recv(4096))
    server = threading.Thread(target=serve)
    server.start()
    try:
        result = host.run([sys.executable, "-c", CLIENT, str(forward.remote_port), "hello"])
        assert (result.rc, result.output) == (0, "got hello\n")
    finally:
        server.join(10)
        forward.close()
        listener.close()
    refused = host.run([sys.executable, "-c", CLIENT, str(forward.remote_port), "again"])
    assert refused.rc != 0 and "ConnectionRefusedError" in refused.output  # the host stopped listening
    forward.close()  # idempotent


def test_a_host_that_forbids_forwarding_is_named_with_the_fix(tmp_path: Path) -> None:
    with ssh_lab(tmp_path, "tun-no", extra_config="AllowTcpForwarding no\n") as lab, lab.host() as host:
        with pytest.raises(HostUnreachable) as info:
            RemoteForward(host, tmp_path / "qmp.sock")
        assert "host lab (198.18.200.1:2222) refused to listen" in str(info.value)
        assert "AllowTcpForwarding yes" in str(info.value)
        assert host.run(["true"]).rc == 0
    assert lab.leftovers() == []


def test_a_forward_dies_with_its_host_connection(host: SSHHost, tmp_path: Path) -> None:
    forward = LocalForward(host, tmp_path / "agent.sock", ECHO_PORT)
    conn = connect_unix(forward.local_path)
    conn.sendall(b"x")
    assert conn.recv(10) == b"x"
    host.close()  # the SSH connection drops (a host rebooting, a cable pulled)
    assert conn.recv(10) == b""
    forward.close()
