"""avocado's runner of ``failover`` tests: one case runs as ``python -m pytest NODE-ID`` in a subprocess
with the job's ``-p NAME=VALUE`` parameters as the harness's options, its results.json and evidence in the
test's data directory; its outcome, failed checks and metrics become the avocado result.

Also ``avocado-runner-failover`` and ``python3 -m harness.avocado.runner`` (how avocado's spawners start it).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avocado.core.nrunner.app import BaseRunnerApp
from avocado.core.nrunner.runner import RUNNER_RUN_STATUS_INTERVAL, BaseRunner
from avocado.core.utils.messages import (
    FinishedMessage,
    LogMessage,
    StartedMessage,
    StdoutMessage,
    WhiteboardMessage,
)

from harness.avocado.translate import KIND, avocado_result, case_argv, find_entry, parameters, whiteboard
from harness.errors import ConfigError
from harness.proc import signals_passed_to

log = logging.getLogger(__name__)


class FailoverRunner(BaseRunner):  # type: ignore[misc]  # avocado has no type hints: BaseRunner is Any
    name = KIND
    description = "Runs a failover-harness case (a pytest node id) and reports its checks and metrics"

    def run(self, runnable: Any) -> Iterator[dict[str, Any]]:
        yield StartedMessage.get()
        module = runnable.uri.split("::")[0]
        task_dir = Path(runnable.output_dir or tempfile.mkdtemp(prefix=".avocado-failover-"))
        try:
            argv = case_argv(runnable.uri, parameters(runnable.variant), task_dir / "data")
        except ConfigError as e:
            yield FinishedMessage.get("error", fail_reason=str(e), class_name=module)
            return
        (task_dir / "data").mkdir(parents=True, exist_ok=True)
        # pytest writes the test's stdout file itself and runs in a session of its own: avocado's SIGTERM
        # (a timeout, an interrupted job) or a terminal's Ctrl-C, passed on by this process, reach it once
        # (Ctrl-C brings both), and its teardown goes on when avocado kills this process a second later.
        stdout = task_dir / "stdout"
        with stdout.open("w") as out:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        # Its pid names what it creates (netns fohx-<pid>-*): how to find its leftovers.
        yield LogMessage.get(f"pytest (pid {child.pid}): {shlex.join(argv)}\n")
        with stdout.open(errors="replace") as output, signals_passed_to(child, first_only=True):
            while True:
                exited = child.poll() is not None
                if text := output.read():
                    yield StdoutMessage.get(text, log_only=True)  # into debug.log as it comes
                if exited:
                    break
                yield self.prepare_status("running")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(RUNNER_RUN_STATUS_INTERVAL)
        entry = find_entry(task_dir / "data" / "results.json", runnable.uri)
        yield WhiteboardMessage.get(whiteboard(entry))
        result, reason = avocado_result(entry, child.returncode, stdout.read_text(errors="replace"))
        yield FinishedMessage.get(result, fail_reason=reason, returncode=child.returncode, class_name=module)


class RunnerApp(BaseRunnerApp):  # type: ignore[misc]  # avocado has no type hints: BaseRunnerApp is Any
    PROG_NAME = f"avocado-runner-{KIND}"
    PROG_DESCRIPTION = "nrunner application for failover-harness cases"
    RUNNABLE_KINDS_CAPABLE = [KIND]


def main() -> None:
    RunnerApp(print).run()


if __name__ == "__main__":
    main()
