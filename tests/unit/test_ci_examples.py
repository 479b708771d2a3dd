"""The CI examples validate against their CI system's schema (vendored in check-jsonschema, offline) and run the
README's two commands, keeping reports/ and its JUnit file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.conftest import REPO

GITHUB = REPO / ".github" / "workflows" / "nightly.yml"
GITLAB = REPO / ".gitlab-ci.yml"
EXAMPLES = [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")]
MAKE_COMMANDS = ["make check", 'make conformance ARGS="--require-resources"']


def validate(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with a schema bundled in the package: no download, no cache."""
    argv = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def load(path: Path) -> Any:
    # YAML 1.2 (ruamel.yaml, a check-jsonschema dependency): GitHub's `on:` stays a string key.
    return YAML(typ="safe", pure=True).load(path)


def ci_view(path: Path) -> tuple[list[str], list[str], str]:
    """(shell commands run, artifact paths, JUnit file) of the example's single job."""
    doc = load(path)
    if path == GITHUB:
        steps = doc["jobs"]["conformance"]["steps"]
        scripts = [s.get("run", "").replace("\\\n", " ") for s in steps]  # join continued lines
        commands = [line.strip() for script in scripts for line in script.splitlines()]
        uploads = [s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
        junit = [s["with"]["report_paths"] for s in steps if s.get("uses", "").startswith("mikepenz/action-junit")]
        return commands, uploads, junit[0] if junit else ""
    job = doc["conformance-nightly"]
    artifacts = job["artifacts"]
    return [c.strip() for c in job["script"]], artifacts["paths"], artifacts["reports"]["junit"]


@pytest.mark.parametrize(("path", "schema"), EXAMPLES, ids=["github", "gitlab"])
def test_example_matches_its_ci_schema(path: Path, schema: str) -> None:
    result = validate(path, schema)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_example_runs_the_readme_commands_and_keeps_reports(path: Path) -> None:
    commands, artifact_paths, junit = ci_view(path)
    assert [c for c in commands if c.startswith("make ")] == MAKE_COMMANDS  # make check first
    assert "reports/" in artifact_paths
    assert junit == "reports/junit.xml"


def test_validation_rejects_a_job_without_runs_on(tmp_path: Path) -> None:
    text = GITHUB.read_text()
    assert "    runs-on: ubuntu-24.04\n" in text
    broken = tmp_path / "nightly.yml"
    broken.write_text(text.replace("    runs-on: ubuntu-24.04\n", ""))
    result = validate(broken, "vendor.github-workflows")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "runs-on" in result.stdout + result.stderr
