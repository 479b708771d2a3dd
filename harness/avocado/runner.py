"""avocado's runner of ``failover`` tests: one case runs as ``python -m pytest NODE-ID`` in a subprocess
with the job's ``-p NAME=VALUE`` parameters as the harness's options, its results.json and evidence in the
test's data directory; its outcome, failed checks and metrics become the avocado result.

Also ``avocado-runner-failover`` and ``python3 -m harness.avocado.runner`` (how avocado's spawners start it).
"""

from __future__ import annotations

import logging
import queue
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class FailoverRunner(BaseRunner):  # type: ignore[misc]  # avocado has no type hints: BaseRunner is Any
    name = KIND
    description = "Runs a failover-harness case (a pytest node id) and reports its checks and metrics"

    def run(self, runnable: Any) -> Iterator[dict[str, Any]]:
        yield StartedMessage.get()
        module = runnable.uri.split("::")[0]
        data_dir = Path(runnable.output_dir or tempfile.mkdtemp(prefix=".avocado-failover-")) / "data"
        try:
            argv = case_argv(runnable.uri, parameters(runnable.variant), data_dir)
        except ConfigError as e:
            yield FinishedMessage.get("error", fail_reason=str(e), class_name=module)
            return
        data_dir.mkdir(parents=True, exist_ok=True)
        yield LogMessage.get(f"{shlex.join(argv)}\n")
        # A session of its own: avocado's SIGTERM (a timeout, an interrupted job) and a terminal's
        # Ctrl-C reach pytest once, through this process, and pytest tears its bed down.
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
        assert child.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(child.stdout, lines), name="pytest-output", daemon=True).start()
        output = []
        with signals_passed_to(child):
            while True:
                try:
                    line = lines.get(timeout=RUNNER_RUN_STATUS_INTERVAL)
                except queue.Empty:
                    yield self.prepare_status("running")
                    continue
                if line is None:
                    break
                output.append(line)
                yield StdoutMessage.get(line)
            exit_code = child.wait()
        entry = find_entry(data_dir / "results.json", runnable.uri)
        yield WhiteboardMessage.get(whiteboard(entry))
        result, reason = avocado_result(entry, exit_code, "".join(output))
        yield FinishedMessage.get(result, fail_reason=reason, returncode=exit_code, class_name=module)


class RunnerApp(BaseRunnerApp):  # type: ignore[misc]  # avocado has no type hints: BaseRunnerApp is Any
    PROG_NAME = f"avocado-runner-{KIND}"
    PROG_DESCRIPTION = "nrunner application for failover-harness cases"
    RUNNABLE_KINDS_CAPABLE = [KIND]


def main() -> None:
    RunnerApp(print).run()


if __name__ == "__main__":
    main()
