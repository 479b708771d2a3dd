"""The ``failover-harness`` command as a user runs it (installed in .venv/bin), without booting guests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO

CLI = Path(sys.executable).parent / "failover-harness"


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_list_names_every_case_and_what_it_needs() -> None:
    done = cli("list", "--json")
    assert done.returncode == 0, done.stderr
    cases = {c["case"]: c for c in json.loads(done.stdout)}
    assert len(cases) >= 24
    pairing = cases["testcases/test_pairing.py::test_pairing_error_is_recognised[igb-primary]"]
    assert pairing["needs"] == ["command-line-pairing"]
    assert pairing["runs_on"] == {"flat": "yes", "nested": "no (command-line-pairing)",
                                  "host": "no (command-line-pairing)"}
    assert pairing["about"].startswith("QEMU refuses a broken pairing")
    assert all(c["about"] for c in cases.values()), "every case says what it checks"


def test_list_takes_node_ids_and_paths() -> None:
    done = cli("list", "--json", "testcases/test_pairing.py",
               "testcases/test_migration.py::test_negotiation_reveals_the_primary")
    assert done.returncode == 0, done.stderr
    cases = [c["case"] for c in json.loads(done.stdout)]
    assert cases[-1] == "testcases/test_migration.py::test_negotiation_reveals_the_primary[from-power-on]"
    assert cases[:-1] and all(c.startswith("testcases/test_pairing.py::") for c in cases[:-1])
    missing = cli("list", "testcases/test_nope.py")
    assert missing.returncode == 4
    assert "run 'pytest --collect-only testcases/test_nope.py' to see why" in missing.stderr


def test_report_summarises_the_last_run(tmp_path: Path) -> None:
    shutil.copy(DATA / "results-small.json", tmp_path / "results.json")
    done = cli("report", "--reports", str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "exit status 1: 1 failed, 1 flaky, 1 passed"
    assert any("passed" in line and "negotiation_reveals_the_primary[from-power-on] (flaky: 1 rerun)" in line
               for line in lines)
    assert any(line.strip().startswith("FAIL logs_clean: ") for line in lines), done.stdout



def test_report_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # `failover-harness report | head -1`: the reader is gone before the last line.
    shutil.copy(DATA / "results-small.json", tmp_path / "results.json")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([str(CLI), "report", "--reports", str(tmp_path)], cwd=REPO, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""  # no BrokenPipeError traceback

@pytest.mark.parametrize(("args", "message"), [
    (("report",), "no results at"),
    (("report", "--open"), "no report at"),
    (("run", "--profile", "/nonexistent/lab.toml"), "--profile: /nonexistent/lab.toml does not exist"),
    (("list", "--cases", "/nonexistent"), "--cases: /nonexistent is not a directory"),
])
def test_bad_input_is_named_and_leaves_nothing(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = cli(*args, "--reports", str(tmp_path / "reports")) if args[0] in ("report", "run") else cli(*args)
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    assert not (tmp_path / "reports").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the namespace probe needs root")
def test_doctor_probes_for_real_and_leaves_nothing() -> None:
    done = cli("doctor")
    assert "[ok  ] network namespaces: created and deleted one" in done.stdout, done.stdout
    assert "qemu failover: virtio-net-pci has failover=<bool>" in done.stdout
    assert "] kvm: " in done.stdout and "] guest image: " in done.stdout
    assert done.returncode == (1 if "[FAIL]" in done.stdout else 0)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "fohx-doctor" not in netns
