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

# The hooks and fixtures pytest finds on this module (the ``pytest11`` entry point), from its parts:
# options (options), stash keys (keys), session hooks (session), fixtures (fixtures), per-test
# evidence (evidence), the bed factory (beds); the rerun policy is a plugin of its own (rerun).
from harness.plugin.beds import failover_bed, pytest_runtest_setup, pytest_sessionfinish
from harness.plugin.evidence import pytest_runtest_makereport
from harness.plugin.fixtures import accel, guest_image, harness_config, host_ready, test_artifacts
from harness.plugin.keys import ARTIFACTS_KEY, CONFIG_KEY, EMULATION_FAULT_KEY, FAILURE_KEY
from harness.plugin.options import config_from_options, pytest_addoption
from harness.plugin.session import (
    pytest_collection_finish,
    pytest_configure,
    pytest_report_header,
    pytest_sessionstart,
    pytest_testnodedown,
    pytest_unconfigure,
)

__all__ = ["ARTIFACTS_KEY", "CONFIG_KEY", "EMULATION_FAULT_KEY", "FAILURE_KEY", "accel", "config_from_options",
           "failover_bed", "guest_image", "harness_config", "host_ready", "pytest_addoption",
           "pytest_collection_finish", "pytest_configure", "pytest_report_header", "pytest_runtest_makereport",
           "pytest_runtest_setup", "pytest_sessionfinish", "pytest_sessionstart", "pytest_testnodedown",
           "pytest_unconfigure", "test_artifacts"]
