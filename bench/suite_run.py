"""Run the conformance suite as a user would, for the bench scripts: wall time and results.json's tests."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def run_cases(*args: str) -> tuple[float, list[dict[str, Any]]]:
    """``pytest testcases`` with *args*; (wall seconds, the tests of results.json). A failing run stops the bench."""
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        results = Path(tmp) / "results.json"
        argv = [sys.executable, "-m", "pytest", str(REPO / "testcases"), "-q", "-p", "no:cacheprovider",
                "--results-json", str(results), "--artifacts-dir", str(Path(tmp) / "artifacts"), *args]
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:])
            raise SystemExit(f"pytest {' '.join(args)} failed with {proc.returncode}")
        return wall, json.loads(results.read_text())["tests"]
