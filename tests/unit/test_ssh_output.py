"""How SSHHost tells a command's output from what the remote login shell printed first. Pure."""

from __future__ import annotations

from harness.lab.ssh import _split_pid


def test_what_the_login_shell_prints_before_the_command_is_not_its_output() -> None:
    # A lab host's root .bashrc that warns (seen on L1 hosts, whose /root is read-only).
    raw = b"pyenv: cannot rehash: /root/.pyenv/shims isn't writable\nfohx-pid 5551\n0000:01:10.0\n"
    assert _split_pid(raw) == (b"5551", b"0000:01:10.0\n")
    assert _split_pid(b"fohx-pid 12\n") == (b"12", b"")
    assert _split_pid(b"sh: exec: not found\n") == (b"", b"sh: exec: not found\n")
