"""A distro kernel package as the guest kernel: unpacked and indexed in the harness's cache, or refused by name."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from harness.config import build_config
from harness.distro_kernel import is_kernel_package, unpack_kernel_package
from harness.errors import ConfigError

RELEASE = "6.12.99-test-amd64"


def _deb(tmp_path: Path, name: str, *, kernel: bool = True, modules: str | None = "usr/lib/modules") -> Path:
    """A kernel-image-shaped .deb, built with dpkg-deb: /boot/vmlinuz-<release> and an (empty) modules tree."""
    root = tmp_path / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: 1\nArchitecture: amd64\n"
                                             "Maintainer: test <t@example.org>\nDescription: test\n")
    if kernel:
        (root / "boot").mkdir()
        (root / "boot" / f"vmlinuz-{RELEASE}").write_bytes(b"bzImage")
    if modules:
        (root / modules / RELEASE / "kernel").mkdir(parents=True)
    deb = tmp_path / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_a_merged_usr_package_is_unpacked_and_indexed_once(tmp_path: Path) -> None:
    deb = _deb(tmp_path, "linux-image-test")
    cache = tmp_path / "cache"
    unpacked = unpack_kernel_package(deb, cache)
    assert unpacked.release == RELEASE and unpacked.kernel.read_bytes() == b"bzImage"
    # What the image builder reads: lib/modules/<release> with the modules.dep depmod wrote.
    assert (unpacked.modules_root / "lib").is_symlink()
    assert (unpacked.modules_root / "lib" / "modules" / RELEASE / "modules.dep").exists()
    assert unpack_kernel_package(deb, cache) == unpacked  # cached by the package's content
    assert len(list((cache / "distro-kernels").iterdir())) == 1


@pytest.mark.parametrize(("kernel", "modules", "message"), [
    (False, "lib/modules", "holds 0 /boot/vmlinuz-* (expected one): not a kernel image package"),
    (True, None, f"holds no modules for {RELEASE} (neither lib/modules nor usr/lib/modules)"),
])
def test_a_package_that_is_no_kernel_is_refused(tmp_path: Path, kernel: bool, modules: str | None,
                                                 message: str) -> None:
    deb = _deb(tmp_path, "not-a-kernel", kernel=kernel, modules=modules)
    with pytest.raises(ConfigError, match=re.escape(message)):
        unpack_kernel_package(deb, tmp_path / "cache")
    assert not any((tmp_path / "cache" / "distro-kernels").iterdir())  # nothing half-unpacked left


def test_a_package_apt_does_not_know_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="guest_kernel: apt cannot fetch linux-image-0.0.0-nonexistent"):
        unpack_kernel_package(Path("linux-image-0.0.0-nonexistent"), tmp_path)


def test_what_guest_kernel_takes(tmp_path: Path) -> None:
    assert is_kernel_package(Path("linux-image-6.12.117+deb13-amd64"))
    assert is_kernel_package(tmp_path / "k.deb")
    assert not is_kernel_package(Path("arch/x86/boot/bzImage"))
    with pytest.raises(ConfigError, match="brings its own modules: drop guest_modules"):
        build_config(None, {"guest_kernel": "linux-image-6.1.0-28-amd64", "guest_modules": str(tmp_path)})
    with pytest.raises(ConfigError, match="is not a file \\(give a bzImage, a kernel .deb, or a package name"):
        build_config(None, {"guest_kernel": str(tmp_path / "bzImage")})
