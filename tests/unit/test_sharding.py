"""failover-harness run --shard K/N: pytest-split's arguments, and the durations file it balances by."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import DURATIONS_FILE, main, shard_arguments
from tests.conftest import REPO


def test_a_shard_is_k_of_n_balanced_by_the_durations_file(capsys: pytest.CaptureFixture[str]) -> None:
    durations = Path("testcases") / DURATIONS_FILE
    assert shard_arguments("2/3", False, durations) == [
        "--splits=3", "--group=2", "--splitting-algorithm=least_duration", f"--durations-path={durations}"]
    assert shard_arguments(None, True, durations) == ["--store-durations", f"--durations-path={durations}"]
    assert shard_arguments(None, False, durations) == []
    for wrong in ("3/2", "0/2", "2", "a/b"):
        assert main(["run", "--shard", wrong]) == 1
        assert f"--shard {wrong!r}: give K/N with 1 <= K <= N" in capsys.readouterr().err


def test_the_durations_file_names_every_case_of_the_suite() -> None:
    listed = subprocess.run([sys.executable, "-m", "harness.cli", "list", "--json"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    cases = {case["case"] for case in json.loads(listed.stdout)}
    durations = json.loads((REPO / "testcases" / DURATIONS_FILE).read_text())
    missing = sorted(cases - set(durations))
    assert not missing, f"refresh {DURATIONS_FILE} (make durations): it lacks {missing}"
