"""The guest control channel against a stand-in agent on a unix socket (no QEMU): what a
serial line does to requests sent while the guest boots, and a guest slow to answer."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.guest import ControlChannel


def _agent(listener: socket.socket, received: list[int], *, drop_first: bool, ready_line: bytes | None,
           answer_delay_s: float) -> None:
    """Serve one connection like images/guest/harness-agent, after a boot that ate the first request."""
    conn, _ = listener.accept()
    # OSError: the test closed its end while an answer was on its way; the agent just ends.
    with conn, conn.makefile("rb") as lines, contextlib.suppress(OSError):
        if drop_first:
            lines.readline()  # arrived while the tty was being opened: gone
        if ready_line is not None:
            conn.sendall(ready_line + b"\n")
        for line in lines:
            req_id, payload = line.split()
            received.append(int(req_id))
            command = base64.b64decode(payload).decode()
            conn.sendall(f"@@R {req_id.decode()} 0\n".encode())
            time.sleep(answer_delay_s)  # the guest forks base64 and sh: seconds under nested TCG
            out = "ok" if command == "echo ok" else ""
            conn.sendall(base64.b64encode(out.encode()) + f"\n@@E {req_id.decode()}\n".encode())


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "control.sock"


def _serve(path: Path, **behaviour: object) -> list[int]:
    """Start the stand-in agent; the request ids it receives (after the dropped one) go to the list."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    received: list[int] = []
    threading.Thread(target=_agent, args=(listener, received), kwargs=behaviour, daemon=True).start()
    return received


@pytest.mark.parametrize("ready_line", [b"@@READY", b"1 ZWNob@@READY"], ids=["clean", "after-an-echo"])
def test_a_lost_probe_is_sent_again_when_the_agent_announces_itself(socket_path: Path, ready_line: bytes) -> None:
    received = _serve(socket_path, drop_first=True, ready_line=ready_line, answer_delay_s=0.0)
    ControlChannel(socket_path).wait_ready(10)
    assert received == [2]  # answered at once, before any periodic probe


def test_a_lost_probe_is_sent_again_after_silence(socket_path: Path) -> None:
    received = _serve(socket_path, drop_first=True, ready_line=None, answer_delay_s=0.0)
    ControlChannel(socket_path).wait_ready(10)
    assert received == [2]


def test_an_answer_slower_than_the_liveness_check_is_read_whole(socket_path: Path) -> None:
    # wait_ready checks QEMU every second; an answer whose lines come 2.5 s apart must survive it.
    _serve(socket_path, drop_first=False, ready_line=None, answer_delay_s=2.5)
    checks = []
    channel = ControlChannel(socket_path, qemu_running=lambda: checks.append(1) is None)
    channel.wait_ready(10)
    assert len(checks) >= 2
