"""Between the harness and avocado, without avocado: which cases a reference names, the tags of a case,
the pytest command that runs one case with a job's ``-p NAME=VALUE`` parameters, and the avocado result
(status, reason, whiteboard) of the case's ``results.json`` entry.

The resolver and the runner (avocado plugins) are thin shells around these, so the translation is
tested without avocado installed.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from harness.config import CASES_DIR
from harness.errors import ConfigError
from harness.plugin.options import pytest_addoption
from harness.report import failure_lines

log = logging.getLogger(__name__)

#: The avocado test kind of a harness case: ``avocado run failover:``.
KIND = "failover"
#: The checkout the cases live in; node ids are relative to it, as pytest prints them.
ROOT = CASES_DIR.parent
#: Options the runner sets itself: each case's results.json and evidence go into its avocado data directory.
RUNNER_OWNED = ("results_json", "artifacts_dir")
#: What a case's whiteboard (JSON) keeps of its results.json entry: the figures, not the traceback.
WHITEBOARD_KEYS = ("nodeid", "outcome", "duration_s", "metrics", "checks", "migration_phases", "run", "reruns")

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "")


def collect(selection: str) -> list[dict[str, Any]]:
    """The cases *selection* names (a node id or path relative to the checkout; empty: every case), each as
    ``failover-harness list --json`` describes it.

    pytest collects in a subprocess: its configuration would otherwise leave the harness plugin's SIGTERM
    handler and imports in avocado's own process.
    """
    argv = [sys.executable, "-m", "harness.cli", "list", "--json", *([selection] if selection else [])]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise ConfigError(f"no case {selection!r} under {ROOT}: {said[0] if said else f'exit {done.returncode}'}")
    cases: list[dict[str, Any]] = json.loads(done.stdout)
    return cases


def tags(case: Mapping[str, Any]) -> dict[str, set[str] | None]:
    """Avocado tags of a case (``-t`` filters on them): ``failover``, each marker (``timing``, ``xfail``,
    ``allow_log``) and ``needs:<capability>`` for each capability it needs from a topology."""
    found: dict[str, set[str] | None] = {KIND: None, **dict.fromkeys(case["markers"])}
    if case["needs"]:
        found["needs"] = set(case["needs"])
    return found


class _OptionTable:
    """Stands in for pytest's parser to read the harness's options (harness.plugin.options) by name."""

    def __init__(self) -> None:
        self.actions: dict[str, str] = {}

    def getgroup(self, name: str, description: str = "") -> _OptionTable:
        return self

    def addoption(self, *names: str, **attrs: Any) -> None:
        long_name = next(n for n in names if n.startswith("--"))
        self.actions[long_name.removeprefix("--").replace("-", "_")] = attrs.get("action", "store")


def harness_options() -> dict[str, str]:
    """Every option of the harness's pytest plugin a parameter can set, by name (``qemu_binary``), with its
    argparse action."""
    table = _OptionTable()
    pytest_addoption(cast(pytest.Parser, table))
    return {name: action for name, action in table.actions.items() if name not in RUNNER_OWNED}


def parameters(variant: Mapping[str, Any] | None) -> dict[str, str]:
    """A runnable's parameters (``avocado run -p NAME=VALUE``, or a varianter's) from its serialised variant."""
    if not variant:
        return {}
    return {str(key): str(value) for _node, leaf in variant.get("variant", []) for _path, key, value in leaf}


def pytest_options(params: Mapping[str, str]) -> list[str]:
    """The harness's pytest options for *params*: ``qemu_binary=PATH`` → ``--qemu-binary=PATH``; a flag
    (``require_resources``, ``no_snapshots``) is given when its value is true; a repeatable option
    (``threshold``, ``allow_log``) takes one value per name, so more use a suffix: ``threshold.gap=...``.
    A name the harness does not know is a :class:`ConfigError` (a typo must not pass unseen)."""
    options = harness_options()
    argv = []
    for name, value in sorted(params.items()):
        option, _, suffix = name.replace("-", "_").partition(".")
        action = options.get(option)
        if action is None:
            owned = " (the runner sets it)" if option in RUNNER_OWNED else ""
            raise ConfigError(f"-p {name}={value}: not an option of the harness{owned}; "
                              f"the options: {', '.join(sorted(options))}")
        if suffix and action != "append":
            raise ConfigError(f"-p {name}={value}: only a repeatable option takes a .SUFFIX "
                              f"({', '.join(sorted(n for n, a in options.items() if a == 'append'))})")
        flag = "--" + option.replace("_", "-")
        if action in ("store_true", "store_false"):
            if value.lower() not in _TRUE + _FALSE:
                raise ConfigError(f"-p {name}={value}: a flag: give true or false")
            argv += [flag] if value.lower() in _TRUE else []
        else:
            argv.append(f"{flag}={value}")
    return argv


def case_argv(nodeid: str, params: Mapping[str, str], data_dir: Path) -> list[str]:
    """pytest on one case, its results.json and evidence (kept as --keep-artifacts says) in *data_dir*."""
    return [sys.executable, "-m", "pytest", f"{ROOT}/{nodeid}", "--progress",
            f"--results-json={data_dir / 'results.json'}", f"--artifacts-dir={data_dir / 'artifacts'}",
            *pytest_options(params)]


def find_entry(results_json: Path, nodeid: str) -> dict[str, Any] | None:
    """The case's entry of a results.json the runner's pytest wrote; None when pytest wrote none."""
    if not results_json.is_file():
        return None
    tests: list[dict[str, Any]] = json.loads(results_json.read_text()).get("tests", [])
    return next((t for t in tests if t["nodeid"] == nodeid), None)


def avocado_result(entry: Mapping[str, Any] | None, exit_code: int, output: str) -> tuple[str, str | None]:
    """Avocado's status (``pass``, ``fail``, ``skip``, ``warn``, ``error``, ``interrupted``) and reason for a
    case's results.json *entry* (None: pytest ended without one; then its *exit_code* and the last error line
    of its *output* say why).

    A failed case's reason is its failed checks, each ``FAIL <name>: <what was measured or seen>``. Avocado
    has no expected failure: a strict xfail (a known QEMU bug on a QEMU that still has it) is ``warn``
    with the bug, as it does not fail the job (pytest's verdict too) but stays counted apart from the passes.
    """
    if entry is None:  # its last error line (pytest's usage errors are followed by where it looked)
        said = [line.strip() for line in output.splitlines() if line.strip()]
        if exit_code == pytest.ExitCode.INTERRUPTED and any("KeyboardInterrupt" in line for line in said):
            return "interrupted", "pytest was interrupted (Ctrl-C, SIGTERM or avocado's timeout) before the verdict"
        why = next((line for line in reversed(said) if "error" in line.lower()), said[-1] if said else "")
        return "error", f"pytest exited {exit_code} without a result for the case" + (f": {why}" if why else "")
    outcome, message = entry["outcome"], str(entry.get("message", ""))
    raised = failure_lines(message)
    failed_checks = [str(line) for line in entry.get("checks", {}).values() if str(line).startswith("FAIL")]
    if outcome == "passed":
        return "pass", None
    if outcome == "failed":
        return "fail", "; ".join(failed_checks) or (raised[-1] if raised else message.strip()[-500:])
    if outcome == "skipped":
        return "skip", message
    if outcome == "xfailed":
        return "warn", "; ".join([f"expected failure: {message}", *failed_checks])
    return "error", raised[-1] if raised else message.strip()[-500:]  # setup or teardown failed


def whiteboard(entry: Mapping[str, Any] | None) -> str:
    """The case's figures for avocado's whiteboard (JSON): outcome, metrics, checks, migration phases."""
    return json.dumps({key: entry[key] for key in WHITEBOARD_KEYS if key in entry} if entry else {})
