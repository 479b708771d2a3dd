"""Pure parts of the image builder: apt's URI listing, module closure, content key."""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import pytest

from harness import image
from harness.capabilities import parse_qemu_version
from harness.errors import CapabilityMissing
from harness.image import (
    L1_RECIPE_DIR,
    RECIPE_DIR,
    USER_KERNEL,
    DebFile,
    GuestImage,
    extract_vmlinux,
    image_key,
    module_closure,
    parse_print_uris,
    recipe_files,
    recipe_scripts,
)

PRINT_URIS = """\
'http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bb1_amd64.deb' busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb 928188 SHA256:{a}
'http://deb.debian.org/debian/pool/main/i/iperf3/iperf3_3.12-1%2bdeb12u2_amd64.deb' iperf3_3.12-1+deb12u2_amd64.deb 33964 SHA256:{b}
""".format(a="a" * 64, b="b" * 64)  # noqa: E501

MODULES_DEP = """\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/vfio.ko:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
"""


def test_parse_print_uris() -> None:
    debs = parse_print_uris(PRINT_URIS)
    assert [(d.package, d.sha256[:1]) for d in debs] == [("busybox-static", "a"), ("iperf3", "b")]
    assert debs[0].filename == "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"


def test_module_closure_follows_dependencies_and_dashes() -> None:
    closure = module_closure(["virtio_net", "vfio_pci", "not_there"], MODULES_DEP)
    assert closure == sorted([
        "kernel/drivers/net/virtio_net.ko", "kernel/drivers/net/net_failover.ko", "kernel/net/core/failover.ko",
        "kernel/drivers/vfio/pci/vfio-pci.ko", "kernel/drivers/vfio/pci/vfio-pci-core.ko",
        "kernel/drivers/vfio/vfio.ko",
    ])


def test_image_key_changes_with_each_input(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe"
    shutil.copytree(RECIPE_DIR, recipe)
    debs = [DebFile("iperf3", "iperf3_1_amd64.deb", "u", "1" * 64)]
    key = image_key(recipe, debs, None, None)
    assert key == image_key(recipe, debs, None, None)
    assert key != image_key(recipe, [DebFile("iperf3", "iperf3_2_amd64.deb", "u", "2" * 64)], None, None)
    for name in recipe_files(recipe):
        (recipe / name).write_text((recipe / name).read_text() + "\n# changed\n")
        changed = image_key(recipe, debs, None, None)
        assert changed != key, name
        key = changed
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    assert image_key(recipe, debs, kernel, None) != key


def test_parse_qemu_version() -> None:
    assert parse_qemu_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)") == (10, 0, 2)
    assert parse_qemu_version("QEMU emulator version 7.2") == (7, 2, 0)
    assert parse_qemu_version("something else") is None


def test_apt_is_asked_again_only_when_its_state_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "Packages").write_text("one")
    asked: list[list[str]] = []

    def resolve(packages: list[str]) -> list[DebFile]:
        asked.append(packages)
        return parse_print_uris(PRINT_URIS)

    monkeypatch.setattr(image, "APT_STATE", (lists,))
    monkeypatch.setattr(image, "resolve_debs", resolve)
    monkeypatch.setattr(image, "resolve_kernel_package", lambda: "linux-image-6.1.0-56-amd64")
    builder = image.ImageBuilder(tmp_path / "cache")
    first = builder._resolve()
    assert builder._resolve() == first and len(asked) == 1  # the second answer came from the cache
    (lists / "Packages").write_text("after apt-get update")
    assert builder._resolve() == first and len(asked) == 2
    assert asked[0][-1] == "linux-image-6.1.0-56-amd64"


def test_recipes_install_their_scripts() -> None:
    assert recipe_scripts(RECIPE_DIR) == ["fo-state", "fo-up", "harness-agent"]
    # The L1 hypervisor shares the guest's agent (a symlink), so the two never drift apart.
    assert recipe_scripts(L1_RECIPE_DIR) == ["harness-agent"]
    assert (L1_RECIPE_DIR / "harness-agent").read_bytes() == (RECIPE_DIR / "harness-agent").read_bytes()


def test_extract_vmlinux_from_an_xz_bzimage() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    bzimage = b"MZ setup code \x00" * 100 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\x00" * 32
    assert extract_vmlinux(bzimage) == elf
    with pytest.raises(CapabilityMissing, match="not an xz-compressed bzImage"):
        extract_vmlinux(b"MZ" + elf)
    with pytest.raises(CapabilityMissing, match="not an ELF kernel"):
        extract_vmlinux(b"MZ" + lzma.compress(b"gzip?", format=lzma.FORMAT_XZ))


def test_the_guest_kernel_release_is_unknown_only_for_a_user_kernel_without_modules() -> None:
    debian = GuestImage(Path("/img/vmlinuz"), Path("/img/initrd.cpio"), "6.1.0-37-amd64", "k")
    assert debian.kernel_release == "6.1.0-37-amd64"
    assert GuestImage(Path("/bzImage"), Path("/img/initrd.cpio"), USER_KERNEL, "k").kernel_release is None
