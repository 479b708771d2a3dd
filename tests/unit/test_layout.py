"""The package layout's promises (issue 20): the lab modules (paramiko) load only for the host
topology, no topology imports a sibling, and cases import only ``harness.topologies``'s public names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import harness.topologies

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY_MODULES = {name.split(":")[0] for name in harness.topologies.TOPOLOGIES.values()}


def _imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running *code*."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("topology", ["flat", "nested"])
def test_plugin_and_a_bed_config_off_the_lab_import_no_paramiko(topology: str) -> None:
    loaded = _imported_after(
        "import harness.plugin\n"
        "from harness.config import build_config\n"
        "from harness.topologies import bed_class\n"
        f"run = build_config(None, {{'topology': {topology!r}}}, 'test')\n"
        "assert bed_class(run.topology).capabilities\n")
    assert "paramiko" not in loaded
    assert not {m for m in loaded if m == "harness.lab" or m.startswith("harness.lab.")}
    assert "harness.topologies.host" not in loaded


def test_the_command_loads_the_lab_only_for_a_lab_command() -> None:
    loaded = _imported_after("import harness.cli\nharness.cli.build_parser().parse_args(['run'])\n")
    assert "paramiko" not in loaded and "harness.lab" not in loaded


def test_the_host_topology_is_where_the_lab_loads() -> None:
    assert "paramiko" in _imported_after("from harness.topologies import bed_class\nbed_class('host')\n")


def _harness_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("harness"))
    return names


@pytest.mark.parametrize("module", sorted(TOPOLOGY_MODULES))
def test_no_topology_imports_a_sibling(module: str) -> None:
    path = REPO / (module.replace(".", "/") + ".py")
    assert _harness_imports(path) & (TOPOLOGY_MODULES - {module}) == set()


@pytest.mark.parametrize("path", sorted((REPO / "testcases").glob("*.py")) + sorted((REPO / "soak").glob("*.py")),
                         ids=lambda p: p.name)
def test_cases_import_only_the_public_topologies_names(path: Path) -> None:
    topologies = {m for m in _harness_imports(path) if m.startswith("harness.topologies")}
    assert topologies <= {"harness.topologies"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "harness.topologies":
            assert {alias.name for alias in node.names} <= set(harness.topologies.__all__)
