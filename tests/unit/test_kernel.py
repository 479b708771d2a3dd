"""Pure parts of the kernel builder: the fragment check, the source package, the cache key."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import CapabilityMissing, ConfigError
from harness.image import DebFile
from harness.kernel import (
    DEFAULT_FRAGMENT,
    KernelBuilder,
    deb_version,
    kernel_key,
    kernel_release,
    missing_options,
    parse_config,
    source_package,
)

FRAGMENT = """\
# why: a comment is not an option
CONFIG_64BIT=y
CONFIG_PVH=y
CONFIG_E1000E=y
# CONFIG_MODULES is not set
CONFIG_SERIAL_8250_NR_UARTS=4
"""

CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_64BIT=y
CONFIG_PVH=y
CONFIG_E1000E=y
# CONFIG_MODULES is not set
CONFIG_SERIAL_8250_NR_UARTS=4
CONFIG_UNRELATED=y
"""

GCC = "gcc (Debian 12.2.0-14+deb12u1) 12.2.0"


def test_parse_config_reads_set_unset_and_valued_options() -> None:
    assert parse_config(FRAGMENT) == {"CONFIG_64BIT": "y", "CONFIG_PVH": "y", "CONFIG_E1000E": "y",
                                      "CONFIG_MODULES": "n", "CONFIG_SERIAL_8250_NR_UARTS": "4"}


def test_a_config_with_every_setting_misses_nothing() -> None:
    assert missing_options(FRAGMENT, CONFIG) == []


def test_an_option_kconfig_dropped_is_missing() -> None:
    config = CONFIG.replace("CONFIG_PVH=y\n", "")
    assert missing_options(FRAGMENT, config) == ["CONFIG_PVH=y (got n)"]


def test_a_module_is_not_built_in() -> None:
    config = CONFIG.replace("CONFIG_E1000E=y", "CONFIG_E1000E=m")
    assert missing_options(FRAGMENT, config) == ["CONFIG_E1000E=y (got m)"]


def test_an_option_the_fragment_turns_off_must_be_off() -> None:
    assert missing_options(FRAGMENT, CONFIG.replace("# CONFIG_MODULES is not set", "CONFIG_MODULES=y")) == [
        "CONFIG_MODULES=n (got y)"]
    # Absent from .config (its dependencies unmet) is off, as asked.
    assert missing_options(FRAGMENT, CONFIG.replace("# CONFIG_MODULES is not set\n", "")) == []


def test_a_changed_value_is_missing() -> None:
    config = CONFIG.replace("NR_UARTS=4", "NR_UARTS=2")
    assert missing_options(FRAGMENT, config) == ["CONFIG_SERIAL_8250_NR_UARTS=4 (got 2)"]


def test_the_shipped_fragment_builds_everything_in() -> None:
    options = parse_config(DEFAULT_FRAGMENT.read_text())
    assert options["CONFIG_MODULES"] == "n"
    assert options["CONFIG_PVH"] == options["CONFIG_NET_FAILOVER"] == options["CONFIG_IGBVF"] == "y"
    assert "m" not in options.values()


@pytest.mark.parametrize(("version", "package"), [
    ("6.1.192-2", "linux-source-6.1"),
    ("6.12.38-1", "linux-source-6.12"),
    ("6.1.0-56-amd64", "linux-source-6.1"),  # the ABI in a linux-image package's name
    ("6.16~rc7-1~exp1", "linux-source-6.16"),
])
def test_source_package_of_a_kernel_version(version: str, package: str) -> None:
    assert source_package(version) == package


def test_a_version_without_a_series_is_refused() -> None:
    with pytest.raises(ConfigError, match="X.Y"):
        source_package("amd64")


def test_deb_version_comes_from_the_file_name() -> None:
    deb = DebFile("linux-image-6.1.0-56-amd64", "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb", "http://x", "a" * 64)
    assert deb_version(deb) == "6.1.192-2"
    assert deb_version(DebFile("b", "b_1%3a1.35.0-4_amd64.deb", "http://x", "b" * 64)) == "1:1.35.0-4"


def test_the_cache_key_follows_every_input() -> None:
    key = kernel_key("a" * 64, FRAGMENT.encode(), GCC)
    assert key == kernel_key("a" * 64, FRAGMENT.encode(), GCC)
    assert key != kernel_key("a" * 64, FRAGMENT.encode() + b"CONFIG_IGB=y\n", GCC)
    assert key != kernel_key("b" * 64, FRAGMENT.encode(), GCC)
    assert key != kernel_key("a" * 64, FRAGMENT.encode(), "gcc (Debian 14.2.0-19) 14.2.0")


def test_missing_build_tools_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no tool is found
    with pytest.raises(CapabilityMissing, match=r"needs apt-get, .*flex, bison, bc.*run 'make setup'"):
        KernelBuilder(tmp_path / "cache").get()


def test_a_built_kernels_release_comes_from_its_manifest(tmp_path: Path) -> None:
    # What KernelBuilder._build writes next to the vmlinux it keeps (trimmed).
    (tmp_path / "manifest.json").write_text(
        '{"key": "0123456789abcdef", "source": "linux-source-6.1_6.1.158-1_all.deb", "release": "6.1.158"}')
    assert kernel_release(tmp_path / "vmlinux") == "6.1.158"
