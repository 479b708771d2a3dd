"""The unix↔TCP relay that carries QMP and agent bytes to QEMUs inside L1 (nested topology),
run for real in a namespace of its own: bytes cross both ways, and both ends see a close."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import netns
from harness.relay import Relay

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


@pytest.fixture
def ns() -> Iterator[netns.Netns]:
    n = netns.Netns(netns.netns_name("relay")).create()
    yield n
    n.delete()


def test_bytes_cross_a_unix_tcp_unix_chain_both_ways(ns: netns.Netns, tmp_path: Path) -> None:
    # The harness's side (unix A) → relay → TCP inside the namespace → relay → the far end (unix B).
    far = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    far.bind(str(tmp_path / "b.sock"))
    far.listen()
    received: list[bytes] = []

    def echo_once() -> None:
        conn, _ = far.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.append(chunk)
                conn.sendall(chunk.upper())

    server = threading.Thread(target=echo_once, daemon=True)
    server.start()
    relays = [Relay(ns.exec_prefix(), "tcp-to-unix", "127.0.0.1:4444", str(tmp_path / "b.sock"), tmp_path / "r1.log")]
    try:
        relays.append(Relay(ns.exec_prefix(), "unix-to-tcp", str(tmp_path / "a.sock"), "127.0.0.1:4444",
                            tmp_path / "r2.log"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as near:
            near.connect(str(tmp_path / "a.sock"))
            near.settimeout(10)
            payload = b"{'execute': 'qmp_capabilities'}\n" * 1000
            near.sendall(payload)
            echoed = b""
            while len(echoed) < len(payload):
                echoed += near.recv(65536)
            assert echoed == payload.upper()
        server.join(10)
        assert not server.is_alive()  # our close reached the far end through both relays
        assert b"".join(received) == payload
    finally:
        for relay in relays:
            relay.close()
        far.close()
    assert all(relay.proc.poll() is not None for relay in relays)
