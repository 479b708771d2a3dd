"""HostProcess on this machine (LocalHost) and over SSH (a real sshd in a namespace, :func:`ssh_lab`)."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import VMError
from harness.host_process import VANISHED, HostProcess
from harness.hosts import Host, LocalHost
from harness.lab.ssh import SSHHost
from tests.conftest import wait_until
from tests.e2e.test_ssh_hosts import SSHD, SshLab, ssh_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    if not SSHD.exists():
        pytest.skip(f"no {SSHD}: 'make setup' installs openssh-server")
    with ssh_lab(tmp_path_factory.mktemp("sshd"), "proc") as lab:
        yield lab
    assert lab.leftovers() == []


@pytest.fixture(params=["local", "ssh"])
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    made: Host = LocalHost() if request.param == "local" else request.getfixturevalue("lab").host()
    with made:
        yield made


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def started(proc: HostProcess, output: io.BytesIO) -> None:
    def printed() -> bool:
        proc.sync_output()
        return output.getvalue() == b"ready\n"
    wait_until(printed, 10, "its first output")


def test_output_and_exit_status_come_back_and_nothing_stays_on_the_host(host: Host, tmp_path: Path) -> None:
    output = io.BytesIO()
    proc = HostProcess(host, str(tmp_path / "prog"),
                       ["sh", "-c", "echo 'a  b' \"$1\"; echo err >&2; exit 3", "sh", "$(id); x"], output)
    assert proc.wait(30) == 3
    assert output.getvalue() == b"a  b $(id); x\nerr\n"  # every argument arrived as one literal word
    assert os.listdir(tmp_path) == []
    assert proc.poll() == 3 and proc.wait() == 3  # asking again changes nothing


def test_output_reaches_the_harness_while_it_runs_and_kill_stops_it(host: Host, tmp_path: Path) -> None:
    output = io.BytesIO()
    proc = HostProcess(host, str(tmp_path / "prog"), ["sh", "-c", "echo ready; exec sleep 300"], output)
    assert alive(proc.pid) and proc.poll() is None
    rss = proc.peak_rss_mib()
    assert rss is not None and 0 < rss < 100
    started(proc, output)
    proc.kill()
    assert proc.poll() == 128 + 9  # SIGKILL, as the shell reports it
    assert not alive(proc.pid)
    assert output.getvalue() == b"ready\n" and os.listdir(tmp_path) == []


def test_collected_files_are_copied_out_and_removed(host: Host, tmp_path: Path) -> None:
    (tmp_path / "remote").mkdir()
    console = tmp_path / "remote" / "console.log"
    proc = HostProcess(host, str(tmp_path / "remote" / "prog"), ["sh", "-c", f"echo booted > {console}"],
                       io.BytesIO(), collect={str(console): tmp_path / "console-copy.log"})
    assert proc.wait(30) == 0
    assert (tmp_path / "console-copy.log").read_text() == "booted\n"
    assert os.listdir(tmp_path / "remote") == []


def test_a_program_that_is_not_there_ends_with_127_and_says_so(host: Host, tmp_path: Path) -> None:
    output = io.BytesIO()
    proc = HostProcess(host, str(tmp_path / "prog"), ["/nonexistent/qemu-system-x86_64", "-M", "q35"], output)
    assert proc.wait(30) == 127
    assert b"/nonexistent/qemu-system-x86_64" in output.getvalue() and b"not found" in output.getvalue()


def test_terminate_lets_it_finish_on_sigterm(host: Host, tmp_path: Path) -> None:
    output = io.BytesIO()
    proc = HostProcess(host, str(tmp_path / "prog"),
                       ["sh", "-c", "trap 'echo flushed; exit 0' TERM; echo ready; while :; do sleep 0.1; done"],
                       output)
    started(proc, output)  # the trap is set
    assert proc.terminate() == 0
    assert output.getvalue() == b"ready\nflushed\n"


def launcher_of(pid: int) -> int:
    """The pid of the subshell that waits for *pid* and writes its status (its parent)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_program_gone_with_its_launcher_has_vanished_and_its_files_are_collected(host: Host,
                                                                                  tmp_path: Path) -> None:
    """Seen in an L1 under TCG: the QEMU and the subshell that writes its status both gone, no status
    written. It counts as ended (a boot wait stops, teardown goes on), and its evidence comes back."""
    (tmp_path / "remote").mkdir()
    console, output = tmp_path / "remote" / "console.log", io.BytesIO()
    proc = HostProcess(host, str(tmp_path / "remote" / "prog"),
                       ["sh", "-c", f"echo booting > {console}; echo ready; exec sleep 300"], output,
                       collect={str(console): tmp_path / "console-copy.log"})
    started(proc, output)
    os.kill(launcher_of(proc.pid), signal.SIGKILL)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == VANISHED and proc.vanished
    assert proc.end_reason() == f"vanished from {host.name} with no exit status"
    assert (tmp_path / "console-copy.log").read_text() == "booting\n"
    assert output.getvalue() == b"ready\n" and os.listdir(tmp_path / "remote") == []


def test_a_program_that_outlives_sigkill_is_an_error_not_a_hang(host: Host, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A QEMU stuck in its host's kernel does not end on SIGKILL (seen in an L1 under TCG); here its
    launcher is stopped, so it stays a zombie no one reaps. kill() says so within its wait; the bed's
    teardown logs that and goes on, instead of failing there and hiding why the case failed."""
    monkeypatch.setattr("harness.host_process.KILL_WAIT_S", 1.0)
    output = io.BytesIO()
    proc = HostProcess(host, str(tmp_path / "prog"), ["sh", "-c", "echo ready; exec sleep 300"], output)
    started(proc, output)
    launcher = launcher_of(proc.pid)
    os.kill(launcher, signal.SIGSTOP)
    try:
        with pytest.raises(VMError, match=rf"prog \(pid {proc.pid}\) did not end within 1 s of SIGKILL"):
            proc.kill()
    finally:
        os.kill(launcher, signal.SIGCONT)
    assert proc.wait(30) == 128 + 9 and not proc.vanished


def test_put_file_copies_a_file_to_the_host(host: LocalHost | SSHHost, tmp_path: Path) -> None:
    local = tmp_path / "initrd.img"
    local.write_bytes(bytes(range(256)) * 4096)  # binary, 1 MiB
    host.put_file(local, str(tmp_path / "copy.img"))
    assert (tmp_path / "copy.img").read_bytes() == local.read_bytes()
