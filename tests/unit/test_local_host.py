"""LocalHost: argv without a shell, combined output, errors that name the host, timeouts that leave nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.errors import DeadlineExceeded, HostCommandFailed
from harness.hosts import Host, LocalHost
from harness.netns import pid_alive
from tests.conftest import wait_until


@pytest.fixture
def host() -> Host:
    return LocalHost("here")


def test_argv_arrives_literally_with_stdout_and_stderr_combined(host: Host) -> None:
    result = host.run(["sh", "-c", 'printf "%s|" "$@"; echo oops >&2', "sh", "a b", "$(id)", "x;y"])
    assert result.rc == 0
    assert result.output == "a b|$(id)|x;y|oops\n"


def test_input_goes_to_stdin(host: Host) -> None:
    assert host.run(["tr", "a-z", "A-Z"], input="hello\n").output == "HELLO\n"


def test_check_names_the_host_the_purpose_the_command_and_its_output(host: Host) -> None:
    assert host.check(["true"], "doing nothing") == ""
    with pytest.raises(HostCommandFailed) as info:
        host.check(["sh", "-c", "echo no such VF; exit 3"], "enabling VFs")
    assert str(info.value) == "host here: enabling VFs failed: sh -c 'echo no such VF; exit 3' exited 3: no such VF"
    assert info.value.returncode == 3


def test_a_missing_program_is_a_failed_command_like_over_ssh(host: Host) -> None:
    result = host.run(["/nonexistent/qemu", "--version"])
    assert result.rc == 127 and "No such file" in result.output


def test_a_timeout_kills_the_command_and_its_children(host: Host, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    with pytest.raises(DeadlineExceeded) as info:
        host.run(["sh", "-c", f'sleep 300 & echo $! $$ > {pids}; echo started; wait'], timeout=1.0)
    assert "host here: sh -c" in str(info.value) and "within 1 s" in str(info.value)
    assert "started" in str(info.value)  # the output so far
    wait_until(lambda: not any(pid_alive(int(pid)) for pid in pids.read_text().split()), 5.0,
               "the command and its child gone")  # SIGKILLed: gone once the kernel has run their exit


def test_files_round_trip(host: Host, tmp_path: Path) -> None:
    path = str(tmp_path / "odd name; $(x)")
    host.write_file(path, "line 1\nline 2 'quoted'\n")
    assert host.read_file(path) == "line 1\nline 2 'quoted'\n"
    with pytest.raises(HostCommandFailed, match=f"host here: reading {tmp_path}/missing failed"):
        host.read_file(str(tmp_path / "missing"))


def test_close_is_idempotent_and_context_managed() -> None:
    with LocalHost() as host:
        assert host.run(["id", "-u"]).output.strip() == str(os.getuid())
    host.close()


def test_take_file_brings_binary_bytes_back_and_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    path.write_bytes(b"\xd4\xc3\xb2\xa1\0\n\xff")
    assert LocalHost("here").take_file(str(path), "reading it") == b"\xd4\xc3\xb2\xa1\0\n\xff"
    assert not path.exists()
