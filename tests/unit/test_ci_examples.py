"""The CI examples validate against their CI system's schema (vendored in check-jsonschema, offline), run
make check once and the suite in shards, and merge the shards' reports into reports/ and its JUnit file."""

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
CHECK = "make check"
SHARD_RUN = {GITHUB: 'make conformance ARGS="--require-resources" SHARD=${{ matrix.shard }}/${{ strategy.job-total }}',
             GITLAB: 'make conformance ARGS="--require-resources" SHARD=$CI_NODE_INDEX/$CI_NODE_TOTAL '
                     'REPORTS=shards/$CI_NODE_INDEX'}
MERGE = 'make merge SHARD_REPORTS="shards/*"'


def validate(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with a schema bundled in the package: no download, no cache."""
    argv = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def load(path: Path) -> Any:
    # YAML 1.2 (ruamel.yaml, a check-jsonschema dependency): GitHub's `on:` stays a string key.
    return YAML(typ="safe", pure=True).load(path)


def _github_commands(job: dict[str, Any]) -> list[str]:
    scripts = [s.get("run", "").replace("\\\n", " ") for s in job["steps"]]  # join continued lines
    return [line.strip() for script in scripts for line in script.splitlines() if line.strip().startswith("make ")]


def _uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if s.get("uses", "").startswith(action)]


@pytest.mark.parametrize(("path", "schema"), EXAMPLES, ids=["github", "gitlab"])
def test_example_matches_its_ci_schema(path: Path, schema: str) -> None:
    result = validate(path, schema)
    assert result.returncode == 0, result.stdout + result.stderr


def test_github_runs_check_once_the_suite_in_shards_and_merges_them_even_after_a_failure() -> None:
    jobs = load(GITHUB)["jobs"]
    assert _github_commands(jobs["check"]) == [CHECK]
    shards = jobs["conformance"]
    assert shards["strategy"]["matrix"]["shard"] == [1, 2] and shards["strategy"]["fail-fast"] is False
    assert _github_commands(shards) == [SHARD_RUN[GITHUB]]
    (upload,) = _uses(shards, "actions/upload-artifact@")
    assert upload["with"] == {"name": "failover-reports-shard-${{ matrix.shard }}", "path": "reports/",
                              "retention-days": 14}
    report = jobs["report"]
    assert report["needs"] == "conformance" and report["if"] == "always()"
    (download,) = _uses(report, "actions/download-artifact@")
    assert download["with"] == {"pattern": "failover-reports-shard-*", "path": "shards/"}
    assert _github_commands(report) == [MERGE]
    assert "reports/" in [u["with"]["path"] for u in _uses(report, "actions/upload-artifact@")]
    (junit,) = _uses(report, "mikepenz/action-junit")
    assert junit["with"]["report_paths"] == "reports/junit.xml"


def test_gitlab_runs_check_once_the_suite_in_shards_and_merges_them_even_after_a_failure() -> None:
    doc = load(GITLAB)
    assert doc["check"]["script"] == [CHECK]
    shards = doc["conformance-nightly"]
    assert shards["parallel"] == 2 and shards["script"] == [SHARD_RUN[GITLAB]]
    assert shards["artifacts"]["paths"] == ["shards/"] and shards["artifacts"]["when"] == "always"
    report = doc["conformance-report"]
    assert report["needs"] == [{"job": "conformance-nightly", "artifacts": True}]
    assert report["rules"][0]["when"] == "always" and report["script"] == [MERGE]
    assert report["artifacts"]["paths"] == ["reports/"]
    assert report["artifacts"]["reports"]["junit"] == "reports/junit.xml"


def test_validation_rejects_a_job_without_runs_on(tmp_path: Path) -> None:
    text = GITHUB.read_text()
    assert "    runs-on: ubuntu-24.04\n" in text
    broken = tmp_path / "nightly.yml"
    broken.write_text(text.replace("    runs-on: ubuntu-24.04\n", ""))
    result = validate(broken, "vendor.github-workflows")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "runs-on" in result.stdout + result.stderr
