"""harness.lab.remote_command against a real sshd (a namespace of this machine, tests.e2e.test_ssh_hosts):
the program runs there, its output comes back (records on our clock), a SIGTERM here stops it there
with nothing left, a harness module runs on the host's own python3, and files come back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.test_ssh_hosts import PORT, SERVER_IP, SSHD, SshLab, cmdlines_in, ssh_lab

pytestmark = pytest.mark.skipif(not SSHD.exists(), reason=f"no {SSHD}: 'make setup' installs openssh-server")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    with ssh_lab(tmp_path_factory.mktemp("relay"), "relay") as lab:
        yield lab
    assert lab.leftovers() == []


def _inventory(lab: SshLab) -> Path:
    path = lab.dir / "lab.toml"
    path.write_text(f"""failover_macs = ["52:54:00:fa:00:01"]
[hosts.lab]
address = "{SERVER_IP}"
port = {PORT}
key = "{lab.dir / 'client_key'}"
known_hosts = "{lab.dir / 'known_hosts'}"
pf = "lab0"
vfs = ["0000:00:10.0", "0000:00:10.2"]
mgmt_address = "{SERVER_IP}"
[peer]
host = "lab"
interface = "lab0"
address = "198.18.200.1/24"
""")
    return path


def _relay(lab: SshLab, files: Path, *args: str) -> list[str]:
    """The argv that runs *args* on the lab host; from inside its namespace, the only place that reaches it."""
    files.mkdir(exist_ok=True)
    return [*lab.ns.exec_prefix(), sys.executable, "-m", "harness.lab.remote_command", "--inventory",
            str(_inventory(lab)), "--host", "lab", "--files", str(files), *args]


def test_output_comes_back_on_our_clock_and_sigterm_stops_the_program_there(lab: SshLab, tmp_path: Path) -> None:
    files = tmp_path / "files"
    marker = "fohx-relay-sleeper"
    script = f"""echo '{{"s": 1, "t": 100.5}}'; echo complaint >&2; exec -a {marker} sleep 600"""
    proc = subprocess.Popen(_relay(lab, files, "--clock-offset", "0.5", "--", "bash", "-c", script),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == {"s": 1, "t": 100.0}
        wait_until(lambda: any(marker in line for line in cmdlines_in(lab.ns)), 10, "the program running there")
        assert [p.name for p in files.iterdir()] != [], "its pid file, for the cleanup of a killed relay"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM, (out, err)
    assert "complaint" in err
    assert not any(marker in line for line in cmdlines_in(lab.ns))
    assert list(files.iterdir()) == []


def test_a_harness_module_runs_on_the_hosts_python3_and_its_exit_status_comes_back(lab: SshLab,
                                                                                    tmp_path: Path) -> None:
    files = tmp_path / "files"
    done = subprocess.run(_relay(lab, files, "--", sys.executable, "-m", "harness.traffic.probe_main"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done  # argparse's usage error, from the module the host ran
    assert "usage: probe_main" in done.stderr and "required: --iface" in done.stderr
    (bundle,) = files.iterdir()
    assert bundle.name.startswith("harness-") and bundle.suffix == ".zip"


def test_collected_files_come_back_and_are_removed_there(lab: SshLab, tmp_path: Path) -> None:
    files = tmp_path / "files"
    remote, local = files / "capture.bin", tmp_path / "capture.bin"
    done = subprocess.run(_relay(lab, files, "--collect", f"{remote}={local}", "--", "sh", "-c",
                                 f"printf 'a\\0b' > {remote}"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    assert local.read_bytes() == b"a\0b"
    assert not remote.exists()
