"""The pytest plugin: options, configuration, capability gates, fixtures and report hooks.

Registered through the ``pytest11`` entry point, so ``pytest testcases`` picks
it up with no conftest. Fixtures, from the outside in:

``harness_config``  the validated :class:`~harness.config.RunConfig`
``host_ready``      capability gate: skips (or errors under ``--require-resources``) with the reason
``guest_image``     the cached guest image (built on first use, once across xdist workers)
``accel``           KVM if a kernel really boots under it, else TCG (cached per host boot)
``test_artifacts``  this test's evidence directory, kept on failure
``failover_bed``    a ready failover bed on the configured topology, torn down whatever happens
"""

from __future__ import annotations

import atexit
import base64
import itertools
import json
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from harness import capabilities, progress
from harness.accel import AccelChoice, choose_accel
from harness.config import RunConfig, build_config, load_profile
from harness.errors import CapabilityMissing, ConfigError, LogTrouble
from harness.image import GuestImage, ImageBuilder
from harness.isolation import timing_isolation
from harness.kernel import KernelBuilder
from harness.lab.inventory import load_inventory
from harness.logscan import compile_allow_list, describe, scan_artifacts
from harness.report import ResultsJson, chart, properties_table
from harness.snapshot import SnapshotStore
from harness.sweep import run_dir, sweep_leftovers
from harness.topologies.flat import FlatBed
from harness.topologies.host import HostBed, LabSession
from harness.topologies.nested import NestedBed

log = logging.getLogger(__name__)

CONFIG_KEY = pytest.StashKey[RunConfig]()
PHASE_REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
ARTIFACTS_KEY = pytest.StashKey[Path]()
BED_ALLOWS_KEY = pytest.StashKey[list[str]]()
SNAPSHOTS_KEY = pytest.StashKey[SnapshotStore]()
LAB_KEY = pytest.StashKey[LabSession]()
# The exception that failed the running attempt first (kept on the item, not the report:
# reports travel to the xdist controller, exceptions cannot); set by harness.rerun.
FAILURE_KEY = pytest.StashKey[BaseException | None]()
# Why the attempt's failure was the emulated hardware's, as the bed judged it at teardown.
EMULATION_FAULT_KEY = pytest.StashKey[str | None]()

_bed_counter = itertools.count(1)
Bed = FlatBed | NestedBed | HostBed
_live_beds: set[Bed] = set()
BED_CLASSES: dict[str, type[Bed]] = {"flat": FlatBed, "nested": NestedBed, "host": HostBed}


# -- options and configuration ------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("failover-harness", "virtio-net failover harness")
    group.addoption("--harness-config", metavar="TOML", default=None,
                    help="TOML profile with run settings and [thresholds]")
    group.addoption("--qemu-binary", metavar="PATH", default=None,
                    help="QEMU to test (default: qemu-system-x86_64 on PATH)")
    group.addoption("--accel", choices=("auto", "kvm", "tcg"), default=None,
                    help="accelerator; auto (default) uses KVM only if a kernel really boots under it")
    group.addoption("--topology", choices=("flat", "nested", "host"), default=None,
                    help="flat (default): one host, emulated primary; nested: the guest in an L1 hypervisor, "
                         "an igb VF passed through with VFIO as its primary, migrated between two L1s; "
                         "host: the lab hosts of --inventory over SSH, their real VFs")
    group.addoption("--flat-primary", choices=("vmxnet3", "e1000e"), default=None,
                    help="the flat topology's emulated primary: vmxnet3 (default), whose link is up at once "
                         "like a VF's, or e1000e, whose link QEMU holds down 500 ms after each driver reset")
    group.addoption("--vf-mac-policy", choices=("shared", "vf-only", "cleared"), default=None,
                    help="nested and host topologies: what the VF's failover MAC does while the primary is "
                         "away: shared (default; the PF's filter has it too), vf-only (the NIC steers it to the "
                         "VF alone), "
                         "cleared (cleared from the VF once the guest released it, set back before the next plug)")
    group.addoption("--inventory", metavar="TOML", default=None,
                    help="the lab inventory of --topology host (see profiles/lab-example.toml); its "
                         "[thresholds] are the run's, --threshold still overrides")
    group.addoption("--guest-kernel", metavar="BZIMAGE", default=None, help="boot this kernel in the guest")
    group.addoption("--guest-modules", metavar="DIR", default=None,
                    help="INSTALL_MOD_PATH of --guest-kernel's modules (make modules_install)")
    group.addoption("--guest-memory", metavar="MIB", type=int, default=None, dest="guest_memory_mib",
                    help="guest RAM in MiB (default 512)")
    group.addoption("--probe-rate", metavar="HZ", type=float, default=None, dest="probe_rate_hz",
                    help="probes per second from the peer (default 1000)")
    group.addoption("--iperf-udp", metavar="BITRATE", default=None, dest="iperf_udp_bitrate",
                    help="run the iperf3 case as UDP at BITRATE (e.g. 100M) instead of TCP")
    group.addoption("--threshold", metavar="NAME=VALUE", action="append", default=[],
                    help="override a threshold, e.g. --threshold max_gap_ms=2000 (see README)")
    group.addoption("--require-resources", action="store_true", default=None,
                    help="a missing capability is an error, not a skip (for CI)")
    group.addoption("--keep-artifacts", choices=("failed", "all", "none"), default="failed",
                    help="which tests keep their logs, QMP transcripts and probe data (default: failed)")
    group.addoption("--artifacts-dir", metavar="DIR", default=None, help="default: reports/artifacts")
    group.addoption("--soak-migrations", metavar="N", type=int, default=100,
                    help="migrations of the soak case (soak/test_soak.py; default 100)")
    group.addoption("--no-snapshots", action="store_false", default=None, dest="snapshots",
                    help="boot every guest cold instead of restoring a saved booted guest")
    group.addoption("--timing-isolation", choices=("host", "shared"), default=None,
                    help="host (default): a timing case runs with no other harness QEMU on the host; shared: "
                         "beside non-timing ones, its timing figures unjudged (e.g. runs on broken setups)")
    group.addoption("--progress", action="store_true", default=False,
                    help="print a line when a long step (image build, boot, migration) starts and ends")
    group.addoption("--allow-log", metavar="REGEX", action="append", default=[],
                    help="a guest console or QEMU line matching REGEX does not fail a case (repeatable)")
    group.addoption("--results-json", metavar="PATH", default=None,
                    help="write per-test outcomes, metrics and checks as JSON")


def _threshold_overrides(values: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"--threshold {item!r}: expected NAME=VALUE, e.g. max_gap_ms=2000")
        out[f"thresholds.{name.strip()}"] = value.strip()
    return out


def config_from_options(config: pytest.Config) -> RunConfig:
    opt = config.option
    profile = load_profile(Path(opt.harness_config)) if opt.harness_config else None
    if opt.inventory:
        # The lab's thresholds over the profile's (a certification record checks they are the inventory's).
        lab = load_inventory(Path(opt.inventory)).thresholds.model_dump(exclude_unset=True)
        profile = {**(profile or {}), "thresholds": {**(profile or {}).get("thresholds", {}), **lab}}
    overrides: dict[str, Any] = {
        "qemu_binary": opt.qemu_binary,
        "accel": opt.accel,
        "topology": opt.topology,
        "flat_primary": opt.flat_primary,
        "vf_mac_policy": opt.vf_mac_policy,
        "inventory": opt.inventory,
        "guest_kernel": opt.guest_kernel,
        "guest_modules": opt.guest_modules,
        "guest_memory_mib": opt.guest_memory_mib,
        "probe_rate_hz": opt.probe_rate_hz,
        "iperf_udp_bitrate": opt.iperf_udp_bitrate,
        "require_resources": opt.require_resources,
        "artifacts_dir": opt.artifacts_dir,
        "allow_log": tuple(opt.allow_log) or None,
        "snapshots": opt.snapshots,
        "timing_isolation": opt.timing_isolation,
        **_threshold_overrides(opt.threshold),
    }
    source = "options" + (f" and {opt.harness_config}" if opt.harness_config else "")
    return build_config(profile, overrides, source)


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
        progress.set_sink(progress.PlainSink(lambda line: _terminal_line(config, line)))
    if not hasattr(config, "workerinput"):  # reports are gathered on the controller, also under xdist
        run = config.stash[CONFIG_KEY]
        results = config.option.results_json
        config.pluginmanager.register(
            ResultsJson(Path(results) if results else None, lambda: {"config": run.model_dump(mode="json")}),
            "harness-results-json")


def pytest_unconfigure(config: pytest.Config) -> None:
    progress.set_sink(None)


def _terminal_line(config: pytest.Config, text: str) -> None:
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


# -- capability gates ---------------------------------------------------------

def _unavailable(run: RunConfig, reason: str) -> None:
    __tracebackhide__ = True
    if run.require_resources:
        pytest.fail(f"required resource missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def harness_config(pytestconfig: pytest.Config) -> RunConfig:
    """The validated run configuration."""
    return pytestconfig.stash[CONFIG_KEY]


@pytest.fixture(scope="session")
def host_ready(harness_config: RunConfig) -> None:
    """Skip (or fail under --require-resources) when the host cannot run the flat topology."""
    problems = capabilities.host_problems(harness_config.qemu_binary)
    if problems:
        _unavailable(harness_config, "; ".join(problems))


@pytest.fixture(scope="session")
def guest_image(harness_config: RunConfig, host_ready: None) -> GuestImage:
    """The guest image, built from Debian packages on first use and cached by content."""
    builder = ImageBuilder(harness_config.cache_dir, user_kernel=harness_config.guest_kernel,
                           user_modules=harness_config.guest_modules)
    try:
        return builder.get()
    except CapabilityMissing as e:
        _unavailable(harness_config, str(e))
        raise  # unreachable: _unavailable always raises


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@pytest.fixture(scope="session")
def accel(harness_config: RunConfig, guest_image: GuestImage, request: pytest.FixtureRequest) -> AccelChoice:
    """The accelerator, probed once per host boot, QEMU binary and kernel (the probe costs seconds)."""
    run = harness_config
    if run.accel != "auto":
        choice = choose_accel(run.accel, run.qemu_binary, guest_image.kernel)
    else:
        qemu_path = shutil.which(run.qemu_binary) or run.qemu_binary
        key = re.sub(r"\W", "_", f"{qemu_path}-{guest_image.key}")
        cache = run.cache_dir / "accel" / f"{key}.json"
        cache.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache) + ".lock"):
            cached = json.loads(cache.read_text()) if cache.exists() else {}
            if cached.get("boot_id") == _boot_id():
                choice = AccelChoice(cached["accel"], cached["reason"])
            else:
                choice = choose_accel("auto", run.qemu_binary, guest_image.kernel)
                cache.write_text(json.dumps({"boot_id": _boot_id(), "accel": choice.accel,
                                             "reason": choice.reason}))
    _terminal_line(request.config, f"failover-harness: accel {choice.accel} ({choice.reason})")
    log.info("accel %s (%s)", choice.accel, choice.reason)
    return choice


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a case that needs what the topology cannot provide, before any fixture costs time."""
    needed = {c for marker in item.iter_markers("bed_needs") for c in marker.args}
    topology = item.config.stash[CONFIG_KEY].topology
    missing = sorted(needed - BED_CLASSES[topology].capabilities)
    if missing:
        pytest.skip(f"the {topology} topology cannot provide: {', '.join(missing)}")


# -- per-test evidence ----------------------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(PHASE_REPORTS_KEY, {})[report.when] = report
    if report.when == "call":
        _scan_logs(item, report)
    if report.when == "call" or (report.when == "setup" and report.failed):
        _attach_extras(item, report)
    if report.when == "teardown" and _failed_so_far(item):
        _link_evidence(item, report)
    return report


def _failed_so_far(item: pytest.Item) -> bool:
    return any(r.failed for r in item.stash.get(PHASE_REPORTS_KEY, {}).values())


def _link_evidence(item: pytest.Item, report: pytest.TestReport) -> None:
    """Link every file of a failed case's evidence (and of a retried first attempt) from the HTML report."""
    artifacts = item.stash.get(ARTIFACTS_KEY, None)
    html_path = item.config.option.htmlpath if hasattr(item.config.option, "htmlpath") else None
    if artifacts is None or not html_path:
        return
    from pytest_html import extras

    report_dir = Path(html_path).resolve().parent
    links = []
    for directory in (artifacts, artifacts.with_name(artifacts.name + ".attempt1")):
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            links.append(extras.url(os.path.relpath(path, report_dir), name=str(path.relative_to(artifacts.parent))))
    _add_html_extras(report, links)


def _scan_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """Fail a passing case whose guests or QEMUs printed trouble (harness.logscan); quote it either way."""
    artifacts = item.stash.get(ARTIFACTS_KEY, None)
    if artifacts is None or not artifacts.is_dir() or hasattr(report, "wasxfail"):
        return
    patterns = [*item.config.stash[CONFIG_KEY].allow_log, *item.stash.get(BED_ALLOWS_KEY, []),
                *(p for marker in item.iter_markers("allow_log") for p in marker.args)]
    try:
        allow = compile_allow_list(patterns)
    except ValueError as e:
        raise pytest.UsageError(f"{item.nodeid}: allow_log marker: {e}") from None
    findings = scan_artifacts(artifacts, allow)
    verdict = (f"FAIL logs_clean: {len(findings)} line(s), first: {findings[0]}" if findings
               else "PASS logs_clean: no kernel warning, call trace, unexpected QEMU message or guest reset")
    for properties in (item.user_properties, report.user_properties):
        properties.append(("check.logs_clean", verdict))
    if not findings:
        return
    if report.passed:
        report.outcome = "failed"
        report.longrepr = describe(findings)
        item.stash[FAILURE_KEY] = LogTrouble(str(findings[0]))  # the bed judges it at teardown
    else:
        report.sections.append(("log scan", describe(findings)))


def _attach_extras(item: pytest.Item, report: pytest.TestReport) -> None:
    try:
        from pytest_html import extras
    except ImportError:
        return
    added = []
    table = properties_table(item.user_properties)
    if table:
        added.append(extras.html(table))
    artifacts = item.stash.get(ARTIFACTS_KEY, None)
    if artifacts is not None:
        for chart in sorted(artifacts.rglob("*.png")):
            name = str(chart.relative_to(artifacts).with_suffix(""))
            added.append(extras.png(base64.b64encode(chart.read_bytes()).decode(), name=name))
    if report.failed and artifacts is not None and artifacts.is_dir():
        for path in sorted(artifacts.iterdir()):
            if path.suffix in (".log", ".jsonl", ".stderr") and path.stat().st_size:
                text = path.read_text(errors="replace")
                added.append(extras.text(text[-20000:], name=path.name))
    _add_html_extras(report, added)


def _add_html_extras(report: pytest.TestReport, extras: list[dict[str, str | None]]) -> None:
    # pytest-html reads report.extras, an attribute of its own that pytest's TestReport does not declare.
    report.extras = [*getattr(report, "extras", []), *extras]  # type: ignore[attr-defined]


def _safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:120]


@pytest.fixture
def test_artifacts(request: pytest.FixtureRequest, harness_config: RunConfig) -> Iterator[Path]:
    """This test's evidence directory; removed after a pass unless --keep-artifacts=all."""
    path = (harness_config.artifacts_dir / _safe_name(request.node.nodeid)).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    request.node.stash[ARTIFACTS_KEY] = path
    yield path
    reports = request.node.stash.get(PHASE_REPORTS_KEY, {})
    failed = any(r.failed for r in reports.values()) or "call" not in reports
    policy = request.config.option.keep_artifacts
    if policy == "none" or (policy == "failed" and not failed):
        shutil.rmtree(path, ignore_errors=True)


# -- the bed ------------------------------------------------------------------------

def _teardown_live_beds() -> None:
    for bed in list(_live_beds):
        bed.teardown()


atexit.register(_teardown_live_beds)


@pytest.fixture
def failover_bed(request: pytest.FixtureRequest, harness_config: RunConfig, guest_image: GuestImage,
                 accel: AccelChoice, test_artifacts: Path, record_property: Any) -> Iterator[Bed]:
    """A running source guest with failover negotiated, on the configured topology.

    Options by indirect parametrization, e.g.
    ``@pytest.mark.parametrize("failover_bed", [{"hotplug": "native"}], indirect=True)``;
    ``"build": False`` hands the test an unbuilt bed (cases that expect the build to fail).
    """
    options: dict[str, Any] = dict(getattr(request, "param", {}))
    build = options.pop("build", True)
    needed = {c for marker in request.node.iter_markers("bed_needs") for c in marker.args}
    missing = sorted(needed - BED_CLASSES[harness_config.topology].capabilities)
    if missing:
        pytest.skip(f"the {harness_config.topology} topology cannot provide: {', '.join(missing)}")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "m")
    tag = f"{worker}-{next(_bed_counter)}"
    record_property("run.accel", accel.accel)
    record_property("run.accel_reason", accel.reason)
    bed: Bed
    if harness_config.topology == "host":
        assert harness_config.inventory is not None  # RunConfig requires it
        try:
            bed = HostBed(harness_config, guest_image, accel.accel, tag, run_dir=run_dir(os.getpid(), tag),
                          artifacts_dir=test_artifacts, inventory=load_inventory(harness_config.inventory),
                          lab=request.config.stash.setdefault(LAB_KEY, LabSession()), **options)
        except ConfigError as e:
            raise pytest.UsageError(f"failover-harness: {e}") from None
    elif harness_config.topology == "nested":
        bed = NestedBed(harness_config, guest_image, accel.accel, tag, run_dir=run_dir(os.getpid(), tag),
                        artifacts_dir=test_artifacts, **options)
    else:
        snapshots = request.config.stash.get(SNAPSHOTS_KEY, None) if harness_config.snapshots else None
        bed = FlatBed(harness_config, guest_image, accel.accel, tag, run_dir=run_dir(os.getpid(), tag),
                      artifacts_dir=test_artifacts, snapshots=snapshots, **options)
    _live_beds.add(bed)
    request.node.stash[BED_ALLOWS_KEY] = bed.expected_log_lines()
    timing = request.node.get_closest_marker("timing") is not None
    # Torn down inside the lock: the next timing case must find no QEMU of ours running.
    with timing_isolation(harness_config.cache_dir / "timing.lock", timing, harness_config.timing_isolation) as how:
        try:
            record_property("run.isolation", how)
            if build:
                try:
                    bed.build()
                except CapabilityMissing as e:  # e.g. an L1 without vfio-pci: what the machine lacks, not a failure
                    _unavailable(harness_config, str(e))
            for name, value in bed.facts().items():  # a paused bed boots later, in the test
                if value is not None:
                    record_property(name, round(value, 2) if isinstance(value, float) else value)
            yield bed
            if _failed_so_far(request.node):
                bed.save_guest_log(test_artifacts / "guest-dmesg.log")
        except Exception as e:  # the build's (a test's failure does not come back here)
            request.node.stash[FAILURE_KEY] = e
            raise
        finally:
            bed.teardown()
            _live_beds.discard(bed)
            if (failure := request.node.stash.get(FAILURE_KEY, None)) is not None:
                request.node.stash[EMULATION_FAULT_KEY] = bed.emulation_fault(failure)
            if (peak := bed.peak_rss_mib()) is not None:
                record_property("run.qemu_peak_rss_mib", round(peak, 1))
