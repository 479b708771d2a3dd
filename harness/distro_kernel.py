"""A distro's kernel package as the guest's kernel: a ``.deb`` file, or a package name apt fetches.

``--guest-kernel linux-image-6.12.117+deb13-amd64`` (or the ``.deb`` itself) is unpacked
into the harness's cache, never into the user's files: its ``/boot/vmlinuz-<release>`` and its
modules, found under ``lib/modules`` or, in a merged-``/usr`` package (Debian 13),
``usr/lib/modules``. Debian's packages ship no ``modules.dep`` (the package's postinst
writes it), so ``depmod`` indexes the unpacked copy. The image builder then takes the
kernel and the unpacked tree as it takes a kernel a developer built.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness import progress
from harness.errors import CapabilityMissing, ConfigError
from harness.image import apt_download, resolve_debs, sha256_file
from harness.proc import run

log = logging.getLogger(__name__)

# A Debian kernel image package's name (linux-image-<release>, with its signed/unsigned variants).
PACKAGE_NAME = re.compile(r"^linux-image-[a-z0-9][a-z0-9+.~-]*$")


def is_kernel_package(value: Path) -> bool:
    """Whether ``--guest-kernel`` names a package (a .deb file, or a package name for apt) rather than a bzImage."""
    return value.suffix == ".deb" or (not value.exists() and PACKAGE_NAME.match(str(value)) is not None)


@dataclass(frozen=True)
class UnpackedKernel:
    kernel: Path  # the bzImage
    modules_root: Path  # holds lib/modules/<release> with its modules.dep, as --guest-modules would
    release: str


def _package_file(spec: Path, deb_dir: Path) -> Path:
    if spec.suffix == ".deb":
        if not spec.is_file():
            raise ConfigError(f"guest_kernel: {spec} does not exist (give a kernel .deb, a package name such as "
                              "linux-image-6.1.0-28-amd64, or a bzImage)")
        return spec
    try:
        (deb,) = resolve_debs([str(spec)])
    except CapabilityMissing as e:
        raise ConfigError(f"guest_kernel: apt cannot fetch {spec} ({e}); 'apt-cache search linux-image' lists "
                          "the kernels apt knows") from None
    deb_dir.mkdir(parents=True, exist_ok=True)
    path = deb_dir / deb.filename
    return path if path.exists() and sha256_file(path) == deb.sha256 else apt_download(deb, deb_dir)


def _modules_dir(tree: Path, release: str, spec: Path) -> Path:
    for candidate in (tree / "lib" / "modules" / release, tree / "usr" / "lib" / "modules" / release):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"guest_kernel: {spec} holds no modules for {release} (neither lib/modules nor "
                      "usr/lib/modules): not a kernel image package")


def unpack_kernel_package(spec: Path, cache_dir: Path) -> UnpackedKernel:
    """The kernel and indexed modules of the package *spec*, unpacked once into *cache_dir*."""
    deb = _package_file(spec, cache_dir / "debs")
    dest = cache_dir / "distro-kernels" / sha256_file(deb)[:16]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / "distro-kernel.lock")):
        if not (dest / "release").exists():
            with progress.step(f"unpacking the guest kernel {deb.name}"), \
                    tempfile.TemporaryDirectory(dir=dest.parent, prefix="unpack-") as tmp:
                tree = Path(tmp) / "tree"
                run(["dpkg-deb", "-x", str(deb), str(tree)], timeout=300)
                kernels = sorted((tree / "boot").glob("vmlinuz-*"))
                if len(kernels) != 1:
                    raise ConfigError(f"guest_kernel: {spec} holds {len(kernels)} /boot/vmlinuz-* (expected one): "
                                      "not a kernel image package")
                release = kernels[0].name.removeprefix("vmlinuz-")
                modules = _modules_dir(tree, release, spec)
                if modules.parent.parent.parent.name == "usr" and not (tree / "lib").exists():
                    (tree / "lib").symlink_to("usr/lib")  # merged /usr: depmod -b and the builder look in lib/
                run(["depmod", "-b", str(tree), release], timeout=300)
                (tree / "release").write_text(release)
                if dest.exists():
                    shutil.rmtree(dest)
                tree.rename(dest)
    release = (dest / "release").read_text()
    log.info("guest kernel %s: release %s, unpacked in %s", spec, release, dest)
    return UnpackedKernel(dest / "boot" / f"vmlinuz-{release}", dest, release)
