"""The plugin's command-line options and the run configuration they make (with the profile and, for the
host topology, the lab inventory's thresholds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.config import RunConfig, build_config, load_profile
from harness.errors import ConfigError
from harness.topologies import TOPOLOGIES


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("failover-harness", "virtio-net failover harness")
    group.addoption("--harness-config", metavar="TOML", default=None,
                    help="TOML profile with run settings and [thresholds]")
    group.addoption("--qemu-binary", metavar="PATH", default=None,
                    help="QEMU to test (default: qemu-system-x86_64 on PATH)")
    group.addoption("--accel", choices=("auto", "kvm", "tcg"), default=None,
                    help="accelerator; auto (default) uses KVM only if a kernel really boots under it")
    group.addoption("--topology", choices=tuple(TOPOLOGIES), default=None,
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
    group.addoption("--guest-kernel", metavar="KERNEL", default=None,
                    help="boot this kernel in the guest: a bzImage, a kernel .deb, or a package name for apt "
                         "(linux-image-...)")
    group.addoption("--guest-modules", metavar="DIR", default=None,
                    help="INSTALL_MOD_PATH of --guest-kernel's modules (make modules_install)")
    group.addoption("--guest-memory", metavar="MIB", type=int, default=None, dest="guest_memory_mib",
                    help="guest RAM in MiB (default 512)")
    group.addoption("--probe-rate", metavar="HZ", type=float, default=None, dest="probe_rate_hz",
                    help="probes per second from the peer (default 1000)")
    group.addoption("--iperf-udp", metavar="BITRATE", default=None, dest="iperf_udp_bitrate",
                    help="run the iperf3 case as UDP at BITRATE (e.g. 100M) instead of TCP")
    group.addoption("--threshold", metavar="NAME=VALUE", action="append", default=[],
                    help="override a threshold, e.g. --threshold max_gap_ms=2000 (see docs/user-guide.md)")
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
    inventory = None
    if opt.inventory:
        from harness.lab.inventory import load_inventory  # the lab package: only for the host topology

        inventory = load_inventory(Path(opt.inventory))
        # The lab's thresholds over the profile's (a certification record checks they are the inventory's).
        lab = inventory.thresholds.model_dump(exclude_unset=True)
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
    run = build_config(profile, overrides, source)
    if run.topology == "host" and inventory is not None:
        from harness.lab.pairs import check_workers

        check_workers(inventory, getattr(opt, "numprocesses", None) or 1)  # xdist's -n: a pair per worker
    return run
