"""The session's fixtures (configuration, capability gate, guest image, accelerator) and each test's
evidence directory."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from harness import capabilities
from harness.accel import AccelChoice, choose_accel
from harness.config import RunConfig
from harness.distro_kernel import is_kernel_package, unpack_kernel_package
from harness.errors import CapabilityMissing
from harness.image import GuestImage, ImageBuilder
from harness.plugin.keys import ARTIFACTS_KEY, CONFIG_KEY, PHASE_REPORTS_KEY
from harness.plugin.session import terminal_line
from harness.report import safe_name

log = logging.getLogger(__name__)


def unavailable(run: RunConfig, reason: str) -> None:
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
        unavailable(harness_config, "; ".join(problems))


@pytest.fixture(scope="session")
def guest_image(harness_config: RunConfig, host_ready: None) -> GuestImage:
    """The guest image, built from Debian packages on first use and cached by content."""
    kernel, modules = harness_config.guest_kernel, harness_config.guest_modules
    try:
        if kernel is not None and is_kernel_package(kernel):
            unpacked = unpack_kernel_package(kernel, harness_config.cache_dir)
            kernel, modules = unpacked.kernel, unpacked.modules_root
        return ImageBuilder(harness_config.cache_dir, user_kernel=kernel, user_modules=modules).get()
    except CapabilityMissing as e:
        unavailable(harness_config, str(e))
        raise  # unreachable: unavailable always raises


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
    terminal_line(request.config, f"failover-harness: accel {choice.accel} ({choice.reason})")
    log.info("accel %s (%s)", choice.accel, choice.reason)
    return choice



@pytest.fixture
def test_artifacts(request: pytest.FixtureRequest, harness_config: RunConfig) -> Iterator[Path]:
    """This test's evidence directory; removed after a pass unless --keep-artifacts=all."""
    path = (harness_config.artifacts_dir / safe_name(request.node.nodeid)).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    request.node.stash[ARTIFACTS_KEY] = path
    yield path
    reports = request.node.stash.get(PHASE_REPORTS_KEY, {})
    failed = any(r.failed for r in reports.values()) or "call" not in reports
    policy = request.config.option.keep_artifacts
    if policy == "none" or (policy == "failed" and not failed):
        shutil.rmtree(path, ignore_errors=True)
