"""``failover-harness``: small host-side commands around the pytest suite.

    failover-harness doctor    what the host can run, and why not
    failover-harness sweep     remove namespaces and QEMUs left by killed runs
    failover-harness image     build (or find) the guest image and print its paths
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from harness import capabilities
from harness.accel import choose_accel
from harness.config import DEFAULT_CACHE_DIR
from harness.errors import HarnessError
from harness.image import ImageBuilder
from harness.netns import sweep_stale


def _doctor(args: argparse.Namespace) -> int:
    problems = capabilities.host_problems(args.qemu_binary)
    for p in problems:
        print(f"missing: {p}")
    if problems:
        return 1
    version, _ = capabilities.qemu_version(args.qemu_binary)
    print(f"qemu: {args.qemu_binary} {'.'.join(map(str, version or ()))}")
    image = ImageBuilder(args.cache_dir).get()
    print(f"guest image: {image.key} (kernel {image.kernel_version})")
    choice = choose_accel("auto", args.qemu_binary, image.kernel)
    print(f"accel: {choice.accel} ({choice.reason})")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    removed = sweep_stale()
    print(f"removed {len(removed)} stale namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
    for run_dir in Path("/tmp").glob("fohx-*"):
        pid = run_dir.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"removed stale run dir {run_dir}")
    return 0


def _image(args: argparse.Namespace) -> int:
    image = ImageBuilder(args.cache_dir).get()
    print(f"kernel: {image.kernel}\ninitrd: {image.initrd}\nversion: {image.kernel_version}\nkey: {image.key}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="failover-harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qemu-binary", default="qemu-system-x86_64")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check the host").set_defaults(func=_doctor)
    sub.add_parser("sweep", help="remove leftovers of killed runs").set_defaults(func=_sweep)
    sub.add_parser("image", help="build the guest image").set_defaults(func=_image)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args))
    except HarnessError as e:
        print(f"failover-harness: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
