"""The QMP session's own teardown, on a real unix socket that no QEMU ever connects to."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import VMError
from harness.qmp import QMPSession


@pytest.mark.parametrize("attempt", range(20))
def test_a_qemu_that_exits_before_connecting_leaves_a_session_that_closes_cleanly(tmp_path: Path,
                                                                                  attempt: int) -> None:
    """As QEMU does when it refuses a -device: the accept is given up, then the session closes. CI saw
    the close race the given-up accept's own cleanup (qemu.qmp asserted its runstate); repeated, since
    a race shows in some runs only."""
    session = QMPSession("src", tmp_path / "qmp.sock", tmp_path / "qmp.jsonl")
    session.listen()
    with pytest.raises(VMError, match="src: QEMU exited before connecting to QMP"):
        session.accept(timeout=5.0, exit_status=lambda: "exited with 1")
    session.close()
    session.close()  # idempotent
