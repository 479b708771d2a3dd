"""The guest image: a Debian kernel and an initramfs built from Debian packages.

Inputs are a recipe directory (``images/guest/`` for the failover guest,
``images/l1/`` for the nested topology's L1 hypervisors): ``packages.txt``,
``modules.txt``, ``init`` and the scripts installed in ``/bin``; and the exact
``.deb`` files apt would fetch for it (by SHA-256), or a user's own kernel
(``--guest-kernel``/``--guest-modules``). The built image is
stored under a hash of all inputs, so it is rebuilt only when one changes, and
the build runs under a file lock, so parallel workers build it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness import progress
from harness.errors import CapabilityMissing, CommandFailed, ConfigError
from harness.proc import run

log = logging.getLogger(__name__)

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
RECIPE_DIR = IMAGES_DIR / "guest"
L1_RECIPE_DIR = IMAGES_DIR / "l1"
RECIPE_LISTS = ("packages.txt", "modules.txt")
KERNEL_META_PACKAGE = "linux-image-amd64"
# What apt's answer depends on: its package lists and its configuration (sources, pinning).
APT_STATE = (Path("/var/lib/apt/lists"), Path("/etc/apt"))
# Trimmed from the unpacked packages: nothing in the guest reads them.
PRUNE = ("usr/share", "usr/lib/x86_64-linux-gnu/gconv", "usr/lib/x86_64-linux-gnu/audit", "etc/init.d",
         "usr/lib/x86_64-linux-gnu/engines-3", "usr/lib/x86_64-linux-gnu/ossl-modules", "sbin/ldconfig",
         "usr/bin/ldd", "var")


# The kernel_version of an image built around a user's kernel given without its modules: not known.
USER_KERNEL = "user"


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    kernel_version: str
    key: str

    @property
    def kernel_release(self) -> str | None:
        """What ``uname -r`` says in a guest booted from this image; None where it is not known."""
        return None if self.kernel_version == USER_KERNEL else self.kernel_version


@dataclass(frozen=True)
class DebFile:
    package: str
    filename: str
    url: str
    sha256: str


def read_list(path: Path) -> list[str]:
    """Non-comment, non-empty lines of a recipe list."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def parse_print_uris(text: str) -> list[DebFile]:
    """Parse ``apt-get download --print-uris`` output: ``'URL' FILE SIZE SHA256:HEX``."""
    debs = []
    for line in text.splitlines():
        m = re.match(r"^'([^']+)' (\S+) \d+ SHA256:([0-9a-f]{64})$", line.strip())
        if m:
            url, filename, sha = m.groups()
            debs.append(DebFile(filename.split("_", 1)[0], filename, url, sha))
    return debs


def resolve_kernel_package() -> str:
    out = run(["apt-cache", "depends", KERNEL_META_PACKAGE], check=False)
    m = re.search(r"Depends: (linux-image-\S+)", out)
    if not m:
        raise CapabilityMissing(
            f"apt knows no {KERNEL_META_PACKAGE}: run 'apt-get update' (make setup does) or give --guest-kernel"
        )
    return m.group(1)


def resolve_debs(packages: list[str]) -> list[DebFile]:
    try:
        out = run(["apt-get", "download", "--print-uris", *packages])
    except CommandFailed as e:
        raise CapabilityMissing(f"apt cannot resolve the guest packages ({e.output.strip()}); "
                                "run 'apt-get update' (make setup does)") from None
    debs = parse_print_uris(out)
    missing = set(packages) - {d.package for d in debs}
    if missing:
        raise CapabilityMissing(f"apt has no download for {sorted(missing)}: run 'apt-get update'")
    return debs


def apt_download(deb: DebFile, deb_dir: Path) -> Path:
    """Fetch *deb* with apt into *deb_dir*, checked against apt's SHA-256."""
    # apt-get download writes into the cwd; _apt cannot write to root-owned
    # cache dirs, which only costs a warning.
    subprocess.run(["apt-get", "download", "-q", deb.package], cwd=deb_dir, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    got = deb_dir / deb.filename
    if not got.exists() or sha256_file(got) != deb.sha256:
        raise CapabilityMissing(f"download of {deb.filename} failed or does not match apt's SHA-256")
    return got


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def recipe_files(recipe_dir: Path) -> list[str]:
    """Every file of a recipe (symlinks to another recipe's scripts included)."""
    return sorted(p.name for p in recipe_dir.iterdir() if p.is_file())


def recipe_scripts(recipe_dir: Path) -> list[str]:
    """The recipe's scripts other than ``init``: installed in the image's ``/bin``."""
    return [name for name in recipe_files(recipe_dir) if name not in (*RECIPE_LISTS, "init")]


def image_key(recipe_dir: Path, debs: list[DebFile], user_kernel: Path | None, user_modules: Path | None) -> str:
    """Content hash of every input of the image."""
    h = hashlib.sha256()
    for name in recipe_files(recipe_dir):
        h.update(name.encode() + b"\0" + (recipe_dir / name).read_bytes() + b"\0")
    for deb in sorted(debs, key=lambda d: d.filename):
        h.update(f"{deb.filename} {deb.sha256}\n".encode())
    if user_kernel is not None:
        h.update(b"kernel " + sha256_file(user_kernel).encode())
    if user_modules is not None:
        h.update(b"modules " + tree_fingerprint(user_modules).encode())
    return h.hexdigest()[:16]


XZ_MAGIC = b"\xfd7zXZ\x00"


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside an xz-compressed bzImage (what the kernel's extract-vmlinux does)."""
    start = bzimage.find(XZ_MAGIC)
    if start < 0:
        raise CapabilityMissing("the kernel is not an xz-compressed bzImage: give an uncompressed vmlinux")
    vmlinux = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
    if not vmlinux.startswith(b"\x7fELF"):
        raise CapabilityMissing("the bzImage's payload is not an ELF kernel")
    return vmlinux


def uncompressed_kernel(image: GuestImage) -> Path:
    """The image's kernel as an ELF vmlinux, extracted once next to it.

    QEMU boots an ELF kernel through its PVH entry point: no decompression and
    no real-mode setup, which under nested TCG cost the L2 guest ~45 s.
    """
    path = image.kernel.with_name("vmlinux")
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(extract_vmlinux(image.kernel.read_bytes()))
        partial.replace(path)  # workers may race: each writes whole, renames
    return path


def module_closure(wanted: list[str], modules_dep: str) -> list[str]:
    """Relative paths of the modules in *wanted* plus everything they depend on (from modules.dep)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[name] = path
    out: list[str] = []
    todo = [by_name[w.replace("-", "_")] for w in wanted if w.replace("-", "_") in by_name]
    while todo:
        path = todo.pop()
        if path in out:
            continue
        out.append(path)
        todo.extend(deps.get(path, []))
    return sorted(out)


class ImageBuilder:
    """Builds (or finds in the cache) the guest image for one configuration."""

    def __init__(self, cache_dir: Path, recipe_dir: Path = RECIPE_DIR,
                 user_kernel: Path | None = None, user_modules: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self.recipe_dir = recipe_dir
        self.user_kernel = user_kernel
        self.user_modules = user_modules

    def _resolve(self) -> tuple[list[DebFile], str]:
        """The packages the recipe needs, as apt would fetch them now, and the image key they give."""
        for tool in ("apt-get", "dpkg-deb", "cpio", "depmod"):
            if shutil.which(tool) is None:
                raise CapabilityMissing(f"'{tool}' is needed to build the guest image: run 'make setup'")
        packages = read_list(self.recipe_dir / "packages.txt")
        with_kernel = self.user_kernel is None
        # Asking apt costs seconds per run; its answer changes only with its lists or configuration.
        state = json.dumps([packages, with_kernel, *(tree_fingerprint(d) for d in APT_STATE if d.is_dir())])
        answer = self.cache_dir / "resolved" / f"{hashlib.sha256(state.encode()).hexdigest()[:16]}.json"
        if answer.exists():
            debs = [DebFile(**deb) for deb in json.loads(answer.read_text())]
        else:
            debs = resolve_debs([*packages, resolve_kernel_package()] if with_kernel else packages)
            answer.parent.mkdir(parents=True, exist_ok=True)
            partial = answer.with_suffix(f".{os.getpid()}.tmp")  # workers may race: each writes whole, renames
            partial.write_text(json.dumps([vars(deb) for deb in debs]))
            partial.replace(answer)
        return debs, image_key(self.recipe_dir, debs, self.user_kernel, self.user_modules)

    def _image(self, key: str) -> GuestImage:
        dest = self.cache_dir / "images" / key
        manifest = json.loads((dest / "manifest.json").read_text())
        return GuestImage(dest / "vmlinuz", dest / "initrd.cpio", manifest["kernel_version"], key)

    def cached(self) -> GuestImage | None:
        """The image for the current recipe if it is already built; never builds."""
        _, key = self._resolve()
        built = (self.cache_dir / "images" / key / "manifest.json").exists()
        return self._image(key) if built else None

    def get(self) -> GuestImage:
        """The image for the current recipe, built (once, under a lock) if it is not cached."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        debs, key = self._resolve()
        dest = self.cache_dir / "images" / key
        with FileLock(str(self.cache_dir / "image.lock")):
            if not (dest / "manifest.json").exists():
                log.info("building guest image %s", key)
                with progress.step(f"building the guest image {key} from Debian packages"):
                    self._build(debs, dest, key)
        return self._image(key)

    def _download(self, debs: list[DebFile]) -> list[Path]:
        deb_dir = self.cache_dir / "debs"
        deb_dir.mkdir(exist_ok=True)
        paths = []
        for deb in debs:
            path = deb_dir / deb.filename
            if not path.exists() or sha256_file(path) != deb.sha256:
                log.info("fetching %s", deb.filename)
                apt_download(deb, deb_dir)
            paths.append(path)
        return paths

    def _build(self, debs: list[DebFile], dest: Path, key: str) -> None:
        paths = self._download(debs)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix="build-") as tmp:
            work = Path(tmp)
            root, kroot = work / "root", work / "kernel"
            root.mkdir()
            kroot.mkdir()
            for deb, path in zip(debs, paths, strict=True):
                run(["dpkg-deb", "-x", str(path), str(kroot if deb.package.startswith("linux-image") else root)])
            for rel in PRUNE:
                target = root / rel
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
            kernel, version = self._kernel(kroot)
            self._install_modules(kroot if self.user_kernel is None else self.user_modules, version, root)
            self._install_recipe(root)
            out = work / "out"
            out.mkdir()
            shutil.copy2(kernel, out / "vmlinuz")
            self._pack(root, out / "initrd.cpio")
            (out / "manifest.json").write_text(json.dumps({
                "key": key,
                "kernel_version": version,
                "debs": [d.filename for d in debs],
                "user_kernel": str(self.user_kernel) if self.user_kernel else None,
            }, indent=2))
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            out.rename(dest)

    def _kernel(self, kroot: Path) -> tuple[Path, str]:
        if self.user_kernel is not None:
            version = USER_KERNEL
            if self.user_modules is not None:
                versions = sorted(p.name for p in (self.user_modules / "lib" / "modules").iterdir())
                if len(versions) != 1:
                    raise ConfigError(f"guest_modules: expected one kernel version under lib/modules, got {versions}")
                version = versions[0]
            return self.user_kernel, version
        kernels = sorted((kroot / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise CapabilityMissing("the kernel package holds no /boot/vmlinuz-*")
        return kernels[-1], kernels[-1].name.removeprefix("vmlinuz-")

    def _install_modules(self, kroot: Path | None, version: str, root: Path) -> None:
        if kroot is None:
            return  # a user kernel without modules: everything must be built in
        src = kroot / "lib" / "modules" / version
        if not src.is_dir():
            return
        if not (src / "modules.dep").exists():
            if self.user_modules is not None:
                # Never write into a user's tree: 'make modules_install' runs depmod itself.
                raise ConfigError(f"guest_modules: {src} has no modules.dep: run 'make modules_install' "
                                  "(it runs depmod) or 'depmod -b DIR VERSION'")
            run(["depmod", "-b", str(kroot), version])
        wanted = read_list(self.recipe_dir / "modules.txt")
        chosen = module_closure(wanted, (src / "modules.dep").read_text())
        dst = root / "lib" / "modules" / version
        for rel in chosen:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
        for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (src / meta).exists():
                shutil.copy2(src / meta, dst / meta)
        run(["depmod", "-b", str(root), version])

    def _install_recipe(self, root: Path) -> None:
        (root / "bin").mkdir(exist_ok=True)
        (root / "etc" / "harness").mkdir(parents=True, exist_ok=True)
        scripts = {"init": "init", **{name: f"bin/{name}" for name in recipe_scripts(self.recipe_dir)}}
        for name, dest in scripts.items():
            shutil.copy2(self.recipe_dir / name, root / dest)
            os.chmod(root / dest, 0o755)
        shutil.copy2(self.recipe_dir / "modules.txt", root / "etc" / "harness" / "modules")
        for d in ("proc", "sys", "dev", "tmp", "run", "sbin", "usr/bin", "usr/sbin"):
            (root / d).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _pack(root: Path, out: Path) -> None:
        # Uncompressed: under TCG, decompressing the initramfs would cost more boot time than it saves.
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        with out.open("wb") as f:
            subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=root,
                           input="\n".join(names).encode(), stdout=f, check=True)
