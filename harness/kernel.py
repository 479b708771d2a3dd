"""A small guest kernel, built once from Debian's kernel source package and cached.

Debian's generic kernel spends most of a nested (TCG inside TCG) guest's boot
initialising drivers and subsystems the harness never uses. This builds
``make tinyconfig`` plus the fragment ``images/l2-kernel/config`` (everything
built in, no modules) from ``linux-source-X.Y`` at the guest image's kernel
version, and keeps the uncompressed ELF ``vmlinux``, which QEMU boots through
its PVH entry point.

The result is stored under a hash of the source package, the fragment and the
compiler, so it is rebuilt only when one of them changes; the build runs under
a file lock, so parallel workers build it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from filelock import FileLock

from harness import progress
from harness.errors import CapabilityMissing, CommandFailed, ConfigError
from harness.image import (
    APT_STATE,
    IMAGES_DIR,
    DebFile,
    parse_print_uris,
    resolve_debs,
    resolve_kernel_package,
    sha256_file,
    tree_fingerprint,
)
from harness.proc import run

log = logging.getLogger(__name__)

DEFAULT_FRAGMENT = IMAGES_DIR / "l2-kernel" / "config"
# Commands the kernel build runs (perl and bc generate headers, flex and bison
# build Kconfig's parser, xz unpacks the source tarball).
BUILD_COMMANDS = ("apt-get", "dpkg-deb", "tar", "xz", "gcc", "make", "flex", "bison", "bc", "perl")
# Headers the build compiles against, and the package that holds each: objtool
# (forced on for x86_64) links libelf; the host tools need libc's headers.
BUILD_HEADERS = {Path("/usr/include/libelf.h"): "libelf-dev", Path("/usr/include/stdio.h"): "libc6-dev"}
BUILD_TIMEOUT_S = 3 * 3600.0  # a cold build on two cores takes minutes; a hung one should not hang forever
LOG_TAIL_CHARS = 2000  # what CommandFailed shows
_OPTION = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse_config(text: str) -> dict[str, str]:
    """Options of a Kconfig file or fragment: ``CONFIG_X=v`` as ``v``, ``# CONFIG_X is not set`` as ``n``."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _OPTION.match(line):
            options[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            options[m.group(1)] = "n"
    return options


def missing_options(fragment_text: str, config_text: str) -> list[str]:
    """The fragment's settings that the final ``.config`` does not have, as ``CONFIG_X=want (got)``.

    Kconfig silently drops an option whose dependencies are unmet, so every
    setting is checked; an option absent from ``.config`` counts as ``n``.
    """
    got = parse_config(config_text)
    return [f"{name}={want} (got {got.get(name, 'n')})"
            for name, want in parse_config(fragment_text).items() if got.get(name, "n") != want]


def source_package(kernel_version: str) -> str:
    """The Debian source package holding the kernel tree of a kernel package's version (``6.1.192-2`` ->
    ``linux-source-6.1``)."""
    m = re.match(r"(\d+\.\d+)[.\-+~]", kernel_version)
    if not m:
        raise ConfigError(f"cannot tell the kernel series (X.Y) of version {kernel_version!r}")
    return f"linux-source-{m.group(1)}"


def deb_version(deb: DebFile) -> str:
    """The package version in a .deb's file name (``NAME_VERSION_ARCH.deb``, ``:`` quoted as ``%3a``)."""
    return deb.filename.split("_")[1].replace("%3a", ":")


def kernel_key(source_sha256: str, fragment_text: bytes, compiler: str) -> str:
    """Content hash of every input of the build."""
    h = hashlib.sha256()
    for part in (source_sha256.encode(), fragment_text, compiler.encode()):
        h.update(part + b"\0")
    return h.hexdigest()[:16]


def _check_tools() -> None:
    missing = [c for c in BUILD_COMMANDS if shutil.which(c) is None]
    missing += [pkg for header, pkg in BUILD_HEADERS.items() if not header.exists()]
    if missing:
        raise CapabilityMissing(f"building the guest kernel needs {', '.join(missing)}: run 'make setup'")


def kernel_release(vmlinux: Path) -> str:
    """The release (``uname -r`` in the guest) of a kernel :meth:`KernelBuilder.get` returned, from its manifest."""
    return str(json.loads((vmlinux.parent / "manifest.json").read_text())["release"])


class KernelBuilder:
    """Builds (or finds in the cache) the small guest kernel for one fragment."""

    def __init__(self, cache_dir: Path, fragment: Path = DEFAULT_FRAGMENT) -> None:
        self.cache_dir = cache_dir
        self.fragment = fragment

    def _resolve(self) -> DebFile:
        """The source package at the version of the guest image's kernel, as apt would fetch it now."""
        # Asking apt costs seconds per run; its answer changes only with its lists or configuration.
        state = json.dumps(["kernel-source", *(tree_fingerprint(d) for d in APT_STATE if d.is_dir())])
        answer = self.cache_dir / "resolved" / f"{hashlib.sha256(state.encode()).hexdigest()[:16]}.json"
        if answer.exists():
            return DebFile(**json.loads(answer.read_text()))
        deb = self._ask_apt()
        answer.parent.mkdir(parents=True, exist_ok=True)
        partial = answer.with_suffix(f".{os.getpid()}.tmp")  # workers may race: each writes whole, renames
        partial.write_text(json.dumps(vars(deb)))
        partial.replace(answer)
        return deb

    @staticmethod
    def _ask_apt() -> DebFile:
        (image,) = resolve_debs([resolve_kernel_package()])
        version = deb_version(image)
        name = source_package(version)
        try:
            out = run(["apt-get", "download", "--print-uris", f"{name}={version}"])
        except CommandFailed as e:
            raise CapabilityMissing(f"apt has no {name} {version} (the guest kernel's source): "
                                    f"{e.output.strip()}; run 'apt-get update' (make setup does)") from None
        (deb,) = parse_print_uris(out)
        return deb

    def get(self) -> Path:
        """The built ``vmlinux`` (uncompressed ELF), built once, under a lock, if it is not cached."""
        _check_tools()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        deb = self._resolve()
        compiler = run(["gcc", "--version"]).splitlines()[0]
        key = kernel_key(deb.sha256, self.fragment.read_bytes(), compiler)
        dest = self.cache_dir / "kernels" / key
        with FileLock(str(self.cache_dir / "kernel.lock")):
            if not (dest / "manifest.json").exists():
                log.info("building guest kernel %s from %s", key, deb.filename)
                with progress.step(f"building the small guest kernel {key} from {deb.package} (minutes)"):
                    self._build(deb, dest, key, compiler)
        return dest / "vmlinux"

    def _download(self, deb: DebFile) -> Path:
        deb_dir = self.cache_dir / "debs"
        deb_dir.mkdir(exist_ok=True)
        path = deb_dir / deb.filename
        if not path.exists() or sha256_file(path) != deb.sha256:
            log.info("fetching %s", deb.filename)
            # apt-get download writes into the cwd; the exact version, so the SHA-256 is the one resolved.
            argv = ["apt-get", "download", "-q", f"{deb.package}={deb_version(deb)}"]
            done = subprocess.run(argv, cwd=deb_dir, capture_output=True, text=True, timeout=1800, check=False)
            if done.returncode != 0:
                raise CapabilityMissing(f"{shlex.join(argv)} failed (exit {done.returncode}): "
                                        f"{(done.stdout + done.stderr).strip()[-LOG_TAIL_CHARS:]}; the small guest "
                                        "kernel is built from it, once (then cached): the first run must be where "
                                        "apt reaches its mirror, not inside a network namespace")
            if not path.exists() or sha256_file(path) != deb.sha256:
                raise CapabilityMissing(f"download of {deb.filename} failed or does not match apt's SHA-256")
        return path

    def _build(self, deb: DebFile, dest: Path, key: str, compiler: str) -> None:
        path = self._download(deb)
        started = time.monotonic()
        # Under the cache: the tree (~1.5 GB built) may not fit a tmpfs /tmp; removed whole, failed or not.
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix="build-kernel-") as tmp:
            work = Path(tmp)
            src = self._unpack(path, deb.package, work)
            fragment_text = self.fragment.read_text()
            for argv in (["make", "tinyconfig"],
                         ["scripts/kconfig/merge_config.sh", "-m", ".config", str(self.fragment)],
                         ["make", "olddefconfig"]):
                self._make_step(argv, src)
            missing = missing_options(fragment_text, (src / ".config").read_text())
            if missing:
                raise ConfigError(f"{self.fragment}: Kconfig dropped these settings (unmet dependencies?): "
                                  f"{', '.join(missing)}")
            self._compile(src, work / "build.log")
            out = work / "out"
            out.mkdir()
            shutil.copy2(src / "vmlinux", out / "vmlinux")
            shutil.copy2(src / ".config", out / "config")
            (out / "manifest.json").write_text(json.dumps({
                "key": key,
                "source": deb.filename,
                "source_sha256": deb.sha256,
                "fragment": str(self.fragment),
                "compiler": compiler,
                "release": (src / "include" / "config" / "kernel.release").read_text().strip(),
                "build_s": round(time.monotonic() - started, 1),
            }, indent=2))
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():  # an entry without a manifest: not ours to trust
                shutil.rmtree(dest)
            out.rename(dest)

    @staticmethod
    def _unpack(path: Path, package: str, work: Path) -> Path:
        """The kernel tree of the source package: its ``/usr/src/<package>.tar.xz``, unpacked."""
        run(["dpkg-deb", "-x", str(path), str(work / "deb")], timeout=600)
        tarball = work / "deb" / "usr" / "src" / f"{package}.tar.xz"
        if not tarball.exists():
            raise CapabilityMissing(f"{path.name} holds no /usr/src/{tarball.name}")
        src = work / "src"
        src.mkdir()
        run(["tar", "-xJf", str(tarball), "-C", str(src), "--strip-components=1"], timeout=1800)
        shutil.rmtree(work / "deb")
        return src

    @staticmethod
    def _make_step(argv: list[str], src: Path) -> None:
        proc = subprocess.run(argv, cwd=src, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=600, check=False)
        if proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, proc.stdout)

    @staticmethod
    def _compile(src: Path, log_path: Path) -> None:
        argv = ["make", f"-j{os.cpu_count() or 1}", "vmlinux"]
        with log_path.open("w") as f:
            proc = subprocess.run(argv, cwd=src, stdout=f, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S,
                                  check=False)
        if proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:])
