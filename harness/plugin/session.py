"""Session-wide hooks: configuration, SIGTERM as Ctrl-C, leftovers swept, warm-up, the report header."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from harness import capabilities, progress
from harness.errors import CapabilityMissing, ConfigError
from harness.kernel import KernelBuilder
from harness.plugin.keys import CONFIG_KEY, SNAPSHOTS_KEY
from harness.plugin.options import config_from_options
from harness.report import ResultsJson, chart
from harness.snapshot import SnapshotStore
from harness.sweep import sweep_leftovers

log = logging.getLogger(__name__)


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    # A CI runner's SIGTERM then tears down like Ctrl-C: fixtures stop QEMU, remove namespaces.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    config.addinivalue_line("markers", "timing: judged against time thresholds; runs with no other harness QEMU "
                            "on the host (harness.isolation)")
    config.addinivalue_line("markers", "bed_needs(*capabilities): skip where the topology lacks one "
                            "(see harness.topologies)")
    config.addinivalue_line("markers", "allow_log(*regexes): guest console or QEMU lines this case provokes "
                            "on purpose (see harness.logscan)")
    try:
        config.stash[CONFIG_KEY] = config_from_options(config)
    except ConfigError as e:
        raise pytest.UsageError(f"failover-harness: {e}") from None
    config.stash[SNAPSHOTS_KEY] = SnapshotStore(config.stash[CONFIG_KEY].cache_dir / "snapshots")
    if config.option.progress:
        progress.set_sink(progress.PlainSink(lambda line: terminal_line(config, line)))
    if not hasattr(config, "workerinput"):  # reports are gathered on the controller, also under xdist
        run = config.stash[CONFIG_KEY]
        results = config.option.results_json
        config.pluginmanager.register(
            ResultsJson(Path(results) if results else None, lambda: {"config": run.model_dump(mode="json")}),
            "harness-results-json")


def pytest_unconfigure(config: pytest.Config) -> None:
    progress.set_sink(None)


def terminal_line(config: pytest.Config, text: str) -> None:
    """A whole line on pytest's terminal, from inside a test (output capture suspended)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capman is None:
        return
    with capman.global_and_fixture_disabled():
        reporter.write_line(text)


def _warm_up() -> None:
    """Import what each case needs before its verdict and a process pays once (matplotlib for the
    timeline chart, scapy for the probe frame: ~0.7 s here), while the first guest starts."""
    chart.pyplot()
    import scapy.layers.inet  # noqa: F401


def pytest_sessionstart(session: pytest.Session) -> None:
    # Leftovers of a crashed or killed run: namespaces whose owning pytest is gone.
    if os.geteuid() == 0 and shutil.which("ip"):
        sweep_leftovers()
    run = session.config.stash[CONFIG_KEY]
    if run.topology == "nested" and run.guest_kernel is None and not session.config.option.collectonly:
        # The first time, building the L2 kernel takes minutes: before any case's timeout runs.
        try:
            KernelBuilder(run.cache_dir).get()
        except CapabilityMissing as e:  # each nested bed says so (a skip, or an error for CI)
            log.warning("the small guest kernel: %s", e)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Only where a case will boot a bed: elsewhere (the unit tests) a half-imported numpy would
    # meet pytest.approx, which reads sys.modules["numpy"] without importing it.
    if not session.config.option.collectonly and any("failover_bed" in getattr(item, "fixturenames", ())
                                                     for item in session.items):
        threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """An xdist worker died (killed, crashed): its teardown never ran, so sweep what it left."""
    if error and os.geteuid() == 0 and shutil.which("ip"):
        sweep_leftovers()


def pytest_report_header(config: pytest.Config) -> list[str]:
    run = config.stash[CONFIG_KEY]
    version, problem = capabilities.qemu_version(run.qemu_binary)
    qemu = ".".join(map(str, version)) if version else problem
    return [f"failover-harness: topology={run.topology} qemu={run.qemu_binary} ({qemu}) accel={run.accel}"]
