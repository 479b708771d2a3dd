"""SSHHost against a real sshd that this module starts in a network namespace of its own.

The sshd is throwaway: its host key, the client keys, authorized_keys and
known_hosts all live in a temporary directory, it listens only on a
198.18.x.x address inside a ``fohx-<pid>-ssh*`` namespace (so the sweeper
removes it should this run die), and the client reaches it through a socket
made in that namespace (:func:`harness.lab.ssh.netns_socket_factory`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import netns
from harness.errors import DeadlineExceeded, HostAuthFailed, HostCommandFailed, HostKeyError, HostUnreachable
from harness.lab.ssh import SSHHost, netns_socket_factory
from harness.proc import die_with_parent, run
from tests.conftest import wait_until

SSHD = Path("/usr/sbin/sshd")
# sshd refuses to start without its privilege separation directory. The package's service
# creates it and leaves it; so do we: removing it could pull it from under another sshd.
PRIVSEP_DIR = Path("/run/sshd")
SERVER_IP = "198.18.200.1"
IDLE_IP = "198.18.200.2"  # assigned in the namespace, nothing listens: refused at once
SILENT_IP = "198.18.200.3"  # on the link's subnet, but nobody answers its ARP
UNROUTED_IP = "198.19.255.254"  # no route in the namespace
PORT = 2222
START_DEADLINE_S = 10.0

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and sshd"),
    pytest.mark.skipif(not SSHD.exists(), reason=f"no {SSHD}: 'make setup' installs openssh-server"),
]

# SetEnv SHLVL=1: bash then skips the rc files it otherwise reads for every command sshd runs (it
# reads them only as a first-level shell). The sshd stands in for a lab host's; this machine's root
# .bashrc (pyenv's init) is this machine's, and cost 1 s per command in an L1 under TCG: 55 s of the
# doctor's 43 commands on two hosts, and more in every lab case's setup and teardown.
SSHD_CONFIG = """\
ListenAddress {ip}:{port}
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
LogLevel VERBOSE
Subsystem sftp internal-sftp
SetEnv SHLVL=1
"""


def keygen(path: Path) -> str:
    """A new ed25519 key pair at *path*; returns the public key line."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)])
    return path.with_suffix(".pub").read_text().strip()


def fingerprint(public_key: str) -> str:
    """The SHA256 fingerprint as OpenSSH prints it: an independent check of the one in our messages."""
    return run(["ssh-keygen", "-lf", "-"], input=public_key).split()[1]


def cmdlines_in(ns: netns.Netns) -> list[str]:
    """What runs inside *ns*, one command line each."""
    lines = []
    for pid in ns.pids():
        with contextlib.suppress(OSError):
            if netns.pid_alive(pid):
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return lines


@dataclass
class SshLab:
    """A running throwaway sshd and what a client needs to reach it."""

    ns: netns.Netns
    dir: Path
    sshd: subprocess.Popen[bytes]
    host_pub: str

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    def host(self, **overrides: Any) -> SSHHost:
        settings: dict[str, Any] = {
            "name": "lab", "address": SERVER_IP, "port": PORT, "key": self.dir / "client_key",
            "known_hosts": self.dir / "known_hosts", "connect_timeout": 5.0,
            "sock_factory": netns_socket_factory(self.ns.name),
        }
        return SSHHost(**(settings | overrides))

    def leftovers(self) -> list[str]:
        """Whatever this lab started that still exists (empty after stop)."""
        left = [f"namespace {self.ns.name}"] if self.ns.name in netns.list_harness_netns() else []
        if self.sshd.poll() is None:
            left.append(f"sshd pid {self.sshd.pid}")
        for pid in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if pid.name.isdigit() and str(self.config).encode() in (pid / "cmdline").read_bytes():
                    left.append(f"process {pid.name} using {self.config}")
        return left


@contextlib.contextmanager
def ssh_lab(tmp: Path, tag: str, extra_config: str = "") -> Iterator[SshLab]:
    """Keys, a namespace ``fohx-<pid>-<tag>`` with the addresses above, sshd listening in it (*extra_config*
    appended to its configuration); removed on exit."""
    host_pub = keygen(tmp / "host_key")
    (tmp / "authorized_keys").write_text(keygen(tmp / "client_key") + "\n")
    (tmp / "known_hosts").write_text(f"[{SERVER_IP}]:{PORT} {host_pub}\n")
    (tmp / "sshd_config").write_text(SSHD_CONFIG.format(ip=SERVER_IP, port=PORT, dir=tmp) + extra_config)
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    ns = netns.Netns(netns.netns_name(tag))
    sshd: subprocess.Popen[bytes] | None = None
    try:
        ns.create()
        # A veth pair, both ends here: a link with carrier whose far end answers no ARP.
        ns.run(["ip", "link", "add", "lab0", "type", "veth", "peer", "name", "lab1"])
        for ip in (SERVER_IP, IDLE_IP):
            ns.run(["ip", "addr", "add", f"{ip}/24", "dev", "lab0"])
        for link in ("lab0", "lab1"):
            ns.run(["ip", "link", "set", link, "up"])
        with (tmp / "sshd.log").open("wb") as log:
            sshd = subprocess.Popen([*ns.exec_prefix(), str(SSHD), "-D", "-e", "-f", str(tmp / "sshd_config")],
                                    stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        lab = SshLab(ns, tmp, sshd, host_pub)
        wait_until(lambda: sshd.poll() is not None or b"Server listening" in (tmp / "sshd.log").read_bytes(),
                   START_DEADLINE_S, "sshd listening")
        assert sshd.poll() is None, f"sshd exited: {(tmp / 'sshd.log').read_text()}"
        yield lab
    finally:
        if sshd is not None:
            sshd.kill()
            sshd.wait()
        ns.delete()  # kills the per-connection sshd processes and what they ran


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    with ssh_lab(tmp_path_factory.mktemp("sshd"), "ssh") as lab:
        yield lab
    assert lab.leftovers() == []


@pytest.fixture
def connect(lab: SshLab) -> Iterator[Callable[..., SSHHost]]:
    """Makes SSHHosts to the lab (overrides as keyword arguments) and closes them after the test."""
    made: list[SSHHost] = []

    def make(**overrides: Any) -> SSHHost:
        made.append(lab.host(**overrides))
        return made[-1]
    yield make
    for host in made:
        host.close()


def test_argv_arrives_as_literal_arguments(connect: Callable[..., SSHHost]) -> None:
    our_netns = os.readlink("/proc/thread-self/ns/net")
    host = connect()
    result = host.run(["printf", "%s|", "a b", "$(id)", "x;y", "'q'", "*"])
    assert (result.rc, result.output) == (0, "a b|$(id)|x;y|'q'|*|")
    assert os.readlink("/proc/thread-self/ns/net") == our_netns  # only a helper thread entered the lab's
    assert host.run(["sh", "-c", "echo out; echo err >&2"]).output == "out\nerr\n"  # stdout and stderr combined


def test_nonzero_exit_and_check_error(connect: Callable[..., SSHHost]) -> None:
    host = connect()
    assert host.run(["sh", "-c", "echo bad VF; exit 7"]).rc == 7
    with pytest.raises(HostCommandFailed) as info:
        host.check(["sh", "-c", "echo bad VF; exit 7"], "binding the VF")
    assert str(info.value) == "host lab: binding the VF failed: sh -c 'echo bad VF; exit 7' exited 7: bad VF"
    assert host.run(["/nonexistent/qemu"]).rc == 127


def test_a_timeout_leaves_no_remote_process(lab: SshLab, connect: Callable[..., SSHHost]) -> None:
    host = connect()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        host.run(["sh", "-c", "echo going; sleep 300 & sleep 301; wait"], timeout=1.0)
    assert time.monotonic() - started < 5
    assert "host lab: sh -c" in str(info.value) and "within 1 s" in str(info.value) and "going" in str(info.value)
    wait_until(lambda: not any("sleep 30" in line for line in cmdlines_in(lab.ns)), 5.0, "remote sleeps gone")
    assert host.run(["true"]).rc == 0  # the connection still serves


def test_an_unknown_host_key_is_refused_with_its_fingerprint_and_the_fix(
        lab: SshLab, connect: Callable[..., SSHHost]) -> None:
    empty = lab.dir / "empty_known_hosts"
    empty.write_text("")
    marker = lab.dir / "ran-with-unknown-key"
    with pytest.raises(HostKeyError) as info:
        connect(known_hosts=empty).run(["touch", str(marker)])
    message = str(info.value)
    assert f"host lab ({SERVER_IP}:{PORT}): unknown host key: it offered ssh-ed25519 {fingerprint(lab.host_pub)}" \
        in message
    assert f"ssh-keyscan -p {PORT} {SERVER_IP} >> {empty}" in message and "host_key_check = false" in message
    assert not marker.exists()


def test_a_changed_host_key_is_refused(lab: SshLab, connect: Callable[..., SSHHost], tmp_path: Path) -> None:
    impostor = keygen(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{SERVER_IP}]:{PORT} {impostor}\n")
    marker = lab.dir / "ran-with-changed-key"
    with pytest.raises(HostKeyError) as info:
        connect(known_hosts=known_hosts).run(["touch", str(marker)])
    message = str(info.value)
    assert "HOST KEY CHANGED" in message
    assert fingerprint(lab.host_pub) in message and fingerprint(impostor) in message
    assert f"ssh-keygen -R \"[{SERVER_IP}]:{PORT}\" -f {known_hosts}" in message
    assert not marker.exists()


def test_host_key_check_off_accepts_an_unknown_key(lab: SshLab, connect: Callable[..., SSHHost]) -> None:
    host = connect(known_hosts=lab.dir / "nonexistent_known_hosts", host_key_check=False)
    assert host.run(["echo", "ok"]).output == "ok\n"


@pytest.mark.parametrize(
    ("address", "cause"),
    [(IDLE_IP, "Connection refused: nothing listens there"),
     (UNROUTED_IP, "Network is unreachable: no route"),
     (SILENT_IP, "no answer within 1 s")],
    ids=["refused", "no-route", "silent"],
)
def test_an_unreachable_host_fails_fast_naming_address_and_cause(
        connect: Callable[..., SSHHost], address: str, cause: str) -> None:
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as info:
        connect(address=address, connect_timeout=1.0).run(["true"])
    assert time.monotonic() - started < 3
    assert str(info.value).startswith(f"host lab ({address}:{PORT}): ")
    assert cause in str(info.value)


def test_a_missing_namespace_is_named(connect: Callable[..., SSHHost]) -> None:
    gone = netns.netns_name("ssh-never-made")
    with pytest.raises(HostUnreachable, match=f"network namespace {gone} does not exist"):
        connect(sock_factory=netns_socket_factory(gone)).run(["true"])
    assert gone not in netns.list_harness_netns()  # not created on the way


def test_a_wrong_client_key_is_an_auth_error_naming_user_and_key(
        connect: Callable[..., SSHHost], tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    with pytest.raises(HostAuthFailed) as info:
        connect(key=tmp_path / "stranger").run(["true"])
    assert f"host lab ({SERVER_IP}:{PORT}): user root was refused with key {tmp_path / 'stranger'}" in str(info.value)


def test_files_round_trip(connect: Callable[..., SSHHost], tmp_path: Path) -> None:
    host = connect()
    path = tmp_path / "remote file; $(x)"
    text = "first line 'quoted'\n" + "x" * 3_000_000 + "\n"  # more than an SSH window: tee echoes as it reads
    host.write_file(str(path), text)
    assert path.read_text() == text  # the sshd runs on this machine: the file is where we said
    assert host.read_file(str(path)) == text
    with pytest.raises(HostCommandFailed, match="host lab: reading .*/missing failed: cat -- .* exited 1"):
        host.read_file(str(tmp_path / "missing"))
    host.close()
    host.close()
    assert host.run(["true"]).rc == 0  # a closed host reconnects on use


def test_the_lab_leaves_nothing_behind(tmp_path: Path) -> None:
    with ssh_lab(tmp_path, "ssh-once") as lab:
        host = lab.host()
        assert host.run(["true"]).rc == 0
        assert lab.leftovers()  # the check sees a running lab
    host.close()
    assert lab.leftovers() == []
