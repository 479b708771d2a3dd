"""The avocado adapter without QEMU: avocado lists every case pytest collects, with its tags; the runner
runs toy cases through pytest and reports each outcome, its failed checks, metrics, evidence and the
job's parameters the way a real case's are (tests/e2e/test_avocado.py runs a real one in a real job)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from avocado.core.nrunner.runnable import Runnable

from harness.avocado import translate
from harness.avocado.runner import FailoverRunner
from harness.proc import signals_passed_to
from tests.conftest import REPO

TOY_CASES = """
    import pytest
    from harness.checks import CheckList

    def test_passes(record_property, request):
        record_property("metric.downtime_ms", 80)
        record_property("run.qemu", request.config.option.qemu_binary)
        checks = CheckList(record_property)
        checks.check("migration_completed", True, "status completed")
        checks.verify()

    def test_fails(record_property, test_artifacts):
        (test_artifacts / "serial-src.log").write_text("login:")
        checks = CheckList(record_property)
        checks.check("migration_completed", True, "status completed")
        checks.check("max_gap_ms", False, "measured 2412.0 ms, limit 2000 ms")
        checks.verify()

    @pytest.mark.xfail(strict=True, reason="QEMU 10.0: the option ROM stays")
    def test_known_bug():
        raise AssertionError("Unknown ramblock")
"""


def run_case(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, nodeid: str,
             **params: str) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The toy case *nodeid* through the runner as avocado's task would: its finished message, its
    whiteboard and its task directory."""
    pytester.makepyfile(test_toy=TOY_CASES)
    monkeypatch.setattr(translate, "ROOT", pytester.path)
    task_dir = pytester.path / "task"
    variant = {"paths": ["/"], "variant_id": None, "variant": [["/", [["/", k, v] for k, v in params.items()]]]}
    messages = list(FailoverRunner().run(Runnable("failover", nodeid, output_dir=str(task_dir), variant=variant)))
    assert messages[0]["status"] == "started"
    (board,) = [m for m in messages if m.get("type") == "whiteboard"]
    return messages[-1], json.loads(board["log"]), task_dir


def test_a_passing_case_passes_with_its_metrics_and_parameters(pytester: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    finished, board, _ = run_case(pytester, monkeypatch, "test_toy.py::test_passes", qemu_binary="/opt/qemu")
    assert (finished["status"], finished["result"]) == ("finished", "pass")
    assert board["metrics"] == {"downtime_ms": 80}
    assert board["run"] == {"qemu": "/opt/qemu"}  # -p qemu_binary=/opt/qemu reached the harness
    assert board["checks"] == {"migration_completed": "PASS migration_completed: status completed"}


def test_a_failing_case_fails_naming_its_check_with_its_evidence(pytester: pytest.Pytester,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    finished, board, task_dir = run_case(pytester, monkeypatch, "test_toy.py::test_fails")
    assert finished["result"] == "fail"
    assert finished["fail_reason"] == "FAIL max_gap_ms: measured 2412.0 ms, limit 2000 ms"
    assert finished["class_name"] == "test_toy.py"
    assert board["outcome"] == "failed"
    data = task_dir / "data"
    assert (data / "artifacts" / "test_toy.py_test_fails" / "serial-src.log").read_text() == "login:"
    assert json.loads((data / "results.json").read_text())["tests"][0]["nodeid"] == "test_toy.py::test_fails"


def test_a_known_bug_warns_with_the_bug(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    finished, _, _ = run_case(pytester, monkeypatch, "test_toy.py::test_known_bug")
    assert finished["result"] == "warn"
    assert finished["fail_reason"] == "expected failure: QEMU 10.0: the option ROM stays"


def test_a_parameter_the_harness_does_not_know_is_an_error(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_toy=TOY_CASES)
    monkeypatch.setattr(translate, "ROOT", pytester.path)
    variant = {"paths": ["/"], "variant": [["/", [["/", "topolgy", "nested"]]]]}
    *_, finished = FailoverRunner().run(Runnable("failover", "test_toy.py::test_passes", variant=variant))
    assert finished["result"] == "error"
    assert finished["fail_reason"].startswith("-p topolgy=nested: not an option of the harness; the options: ")


def test_avocado_lists_every_case_pytest_collects_with_its_tags(tmp_path: Path) -> None:
    collected = subprocess.run([sys.executable, "-m", "pytest", "testcases", "--collect-only", "-q"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    nodeids = [line for line in collected.splitlines() if "::" in line]
    # The recipes: each listed test as avocado will run it (its kind, node id and tags).
    listed = subprocess.run([sys.executable, "-m", "avocado", "list", "--write-recipes-to-directory", str(tmp_path),
                             "failover:"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    recipes = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*.json"))]  # 01.json, 02.json...
    assert [r["uri"] for r in recipes] == nodeids
    assert {r["kind"] for r in recipes} == {"failover"}
    native = next(r for r in recipes if r["uri"].endswith("test_migration_with_failover_under_probes[native]"))
    assert native["kwargs"]["tags"] == {"failover": None, "timing": None, "needs": ["hotplug-style"]}


def test_the_runner_passes_on_only_the_first_of_two_stop_signals(tmp_path: Path) -> None:
    # Ctrl-C on `avocado run` stops the runner twice (the terminal's SIGINT, then the job's SIGTERM);
    # pytest must see one, or the second interrupts its teardown.
    seen = tmp_path / "seen"
    child = subprocess.Popen([sys.executable, "-c", f"""
import signal, sys, time
got = []
for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda s, f: got.append(signal.Signals(s).name))
print("ready", flush=True)
time.sleep(2)
open({str(seen)!r}, "w").write(" ".join(got))
"""], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    with signals_passed_to(child, first_only=True):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        child.wait(10)
    assert seen.read_text() == "SIGINT"
