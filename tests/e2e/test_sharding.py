"""CI sharding end to end, as a CI's shard jobs and its final job run it: two shards of a part of the suite,
merged, give the same cases and outcomes as one run of that part.

The part is the four pairing-error cases (none judges time: they run beside make check's other worker, about
7 s each); the shards split them by the repository's durations file, as a CI's runners do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.image import GuestImage
from tests.conftest import REPO

PART = ("-k", "pairing_error_is_recognised", "-p", "no:cacheprovider", "--timing-isolation", "shared")


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def _harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def _outcomes(results: dict[str, Any]) -> dict[str, str]:
    return {t["nodeid"]: t["outcome"] for t in results["tests"]}


def test_two_shards_merged_are_the_one_run(tmp_path: Path) -> None:
    whole = _harness("run", "--reports", str(tmp_path / "whole"), "--", *PART)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    one_run = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert len(one_run["tests"]) == 4

    shard_dirs = [tmp_path / f"shard{k}" for k in (1, 2)]
    for k, directory in enumerate(shard_dirs, 1):
        shard = _harness("run", "--shard", f"{k}/2", "--reports", str(directory), "--", *PART)
        assert shard.returncode == 0, shard.stdout + shard.stderr
        # Balanced by the durations kept in the repository, not by count.
        assert f"[pytest-split] Running group {k}/2 (estimated duration:" in shard.stdout, shard.stdout
        assert "No test durations found" not in shard.stdout + shard.stderr
    shard_cases = [set(_outcomes(json.loads((d / "results.json").read_text()))) for d in shard_dirs]
    assert all(shard_cases) and not shard_cases[0] & shard_cases[1]

    started = time.monotonic()
    merge = _harness("report", "--merge", *map(str, shard_dirs), "--reports", str(tmp_path / "merged"))
    merge_s = time.monotonic() - started
    assert merge.returncode == 0, merge.stdout + merge.stderr
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert _outcomes(merged) == _outcomes(one_run)
    assert merged["summary"] == one_run["summary"] and merged["exit_status"] == one_run["exit_status"] == 0
    assert {t["shard"] for t in merged["tests"]} == {"shard-1", "shard-2"}
    junit = ET.parse(tmp_path / "merged" / "junit.xml").getroot()
    whole_junit = ET.parse(tmp_path / "whole" / "junit.xml").getroot()
    assert sorted(c.get("name", "") for c in junit.iter("testcase")) == sorted(
        c.get("name", "") for c in whole_junit.iter("testcase"))
    html = (tmp_path / "merged" / "report.html").read_text()
    assert all(nodeid in html for nodeid in _outcomes(one_run))
    assert all((tmp_path / "merged" / "shards" / f"shard-{k}" / "report.html").is_file() for k in (1, 2))
    print(f"merge of 2 shards: {merge_s:.2f} s")
