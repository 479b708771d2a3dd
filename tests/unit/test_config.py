"""Run configuration: defaults, profile + options merge, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import build_config, load_profile
from harness.errors import ConfigError


def test_defaults() -> None:
    cfg = build_config(None, {})
    assert cfg.accel == "auto" and cfg.topology == "flat"
    assert cfg.probe_rate_hz == 1000.0  # resolves 1 ms
    assert cfg.thresholds.max_probes_lost == 160
    assert cfg.thresholds.max_gap_ms == 325.0


def test_options_override_profile_and_none_is_ignored() -> None:
    profile = {"accel": "kvm", "thresholds": {"max_gap_ms": 1500, "max_probes_lost": 50}}
    cfg = build_config(profile, {"accel": "tcg", "qemu_binary": None, "thresholds.max_gap_ms": "900"})
    assert cfg.accel == "tcg"
    assert cfg.thresholds.max_gap_ms == 900.0
    assert cfg.thresholds.max_probes_lost == 50


@pytest.mark.parametrize(
    ("profile", "overrides", "message"),
    [
        (None, {"accel": "hvf"}, "accel (options): Input should be 'auto', 'kvm' or 'tcg'"),
        (None, {"thresholds.max_gap_ms": "-1"}, "thresholds.max_gap_ms (options): Input should be greater than 0"),
        (None, {"thresholds.max_gapms": "1"}, "thresholds.max_gapms (options): Extra inputs are not permitted"),
        ({"qemu": "x"}, {}, "qemu (options): Extra inputs are not permitted"),
        (None, {"probe_rate_hz": "5000"}, "probe_rate_hz (options): Input should be less than or equal to 1000"),
        (None, {"guest_kernel": "/nonexistent/bzImage"}, "/nonexistent/bzImage is not a file"),
        (None, {"iperf_udp_bitrate": "fast"}, "iperf_udp_bitrate (options): String should match pattern"),
        (None, {"vf_mac_policy": "cleared"}, "vf_mac_policy cleared: the flat topology's primary is no VF: "
                                            "add --topology nested (or host)"),
        (None, {"topology": "nested", "flat_primary": "e1000e"},
         "flat_primary e1000e: only the flat topology emulates its primary (this run's is nested"),
    ],
)
def test_errors_name_the_field(profile: dict | None, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        build_config(profile, overrides)
    assert message in str(info.value)


def test_guest_modules_need_a_kernel_and_lib_modules(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"k")
    with pytest.raises(ConfigError, match="only meaningful together with guest_kernel"):
        build_config(None, {"guest_modules": str(tmp_path)})
    with pytest.raises(ConfigError, match="has no lib/modules"):
        build_config(None, {"guest_kernel": str(kernel), "guest_modules": str(tmp_path)})
    (tmp_path / "lib" / "modules" / "6.1.0").mkdir(parents=True)
    cfg = build_config(None, {"guest_kernel": str(kernel), "guest_modules": str(tmp_path)})
    assert cfg.guest_modules == tmp_path


def test_profile_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("accel = \n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML.*line 1"):
        load_profile(bad)
