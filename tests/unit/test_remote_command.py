"""harness.lab.remote_command's pure parts: the argv a host runs, records put on our clock, the bundle of
traffic modules (and that a bare python3, without the harness's virtualenv, runs them from it)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

from harness.lab.remote_command import on_our_clock, remote_argv, traffic_bundle

SYSTEM_PYTHON = "/usr/bin/python3"


def test_a_harness_module_runs_on_the_hosts_python3_from_the_bundle_in_the_namespace() -> None:
    argv = [sys.executable, "-m", "harness.traffic.probe_main", "--iface", "eth0"]
    assert remote_argv(argv, "/run/fohx/p/harness-1.zip", "peer") == [
        "ip", "netns", "exec", "peer", "env", "PYTHONPATH=/run/fohx/p/harness-1.zip", "python3", "-m",
        "harness.traffic.probe_main", "--iface", "eth0"]


def test_other_programs_run_as_given() -> None:
    argv = ["iperf3", "-c", "198.18.0.2", "-J"]
    assert remote_argv(argv, "", None) == argv
    assert remote_argv(["python3", "-m", "harness.x"], "b.zip", None) == ["python3", "-m", "harness.x"]


def test_a_records_time_moves_to_our_clock_and_nothing_else_changes() -> None:
    line = b'{"r": 17, "t": 1700000000.25}\n'
    assert json.loads(on_our_clock(line, 0.5)) == {"r": 17, "t": 1699999999.75}
    assert json.loads(on_our_clock(line, -0.5)) == {"r": 17, "t": 1700000000.75}
    for untouched in (b'{"stats": {"sent": 3}}\n', b"  \"end\": {\n", b"{not json\n", b"[1, 2]\n"):
        assert on_our_clock(untouched, 0.5) == untouched
    assert on_our_clock(line, 0.0) == line


def test_the_bundle_is_the_same_bytes_for_the_same_sources_and_holds_the_traffic_package() -> None:
    bundle = traffic_bundle()
    assert bundle == traffic_bundle()
    names = zipfile.ZipFile(BytesIO(bundle)).namelist()
    assert {"harness/__init__.py", "harness/errors.py", "harness/traffic/probe_main.py",
            "harness/traffic/capture_main.py"} <= set(names), names


def test_a_bare_python3_runs_the_peers_programs_from_the_bundle(tmp_path: Path) -> None:
    """What a lab host has: its own python3, no virtualenv: the bundle needs only the standard library."""
    bundle = tmp_path / "harness.zip"
    bundle.write_bytes(traffic_bundle())
    for module in ("probe_main", "capture_main"):
        done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", f"import sys; sys.path.insert(0, {str(bundle)!r}); "
                               f"import harness.traffic.{module} as m; print(m.__file__)"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(str(bundle)), done.stdout


def test_nothing_in_the_bundle_imports_beyond_the_standard_library_even_inside_a_function() -> None:
    """A lab host has no scapy, pydantic or paramiko: an import anywhere in a bundled module (a lazy one in
    a function too) must be the standard library's or the harness's own, and the harness's bundled."""
    bundle = zipfile.ZipFile(BytesIO(traffic_bundle()))
    bundled = {name.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for name in bundle.namelist()}
    outside = {}
    for name in bundle.namelist():
        for node in ast.walk(ast.parse(bundle.read(name))):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for module in modules:
                top = module.split(".")[0]
                if top == "__future__" or (top in sys.stdlib_module_names and top != "harness"):
                    continue
                if module not in bundled:
                    outside.setdefault(name, []).append(module)
    assert outside == {}
