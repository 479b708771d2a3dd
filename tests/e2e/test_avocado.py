"""The conformance cases as an avocado job, with real QEMU: ``avocado run failover:NODE-ID`` as a user runs it.

One job runs the save/restore migration case twice, as two avocado variants: on this host's QEMU and on the
``no-failover`` wrapper (QEMU without failover: the broken setup every check of the case fails on). The
job's results must say PASS and FAIL naming the failed check, carry the case's metrics in the whiteboard,
keep the failed run's evidence in its test's data directory, and nothing may be left behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.image import GuestImage
from tests.conftest import REPO
from tests.e2e.test_flat_suite import FAST_FAIL, WRAPPERS, leftovers

# A migration through a file (virsh save/restore): it records the migration's metrics and, judging no
# time, runs beside other cases, so both variants run at once.
CASE = "testcases/test_migration_modes.py::test_save_and_restore"
VARIANTS = [
    {"paths": ["/"], "variant_id": "healthy", "variant": [["/", []]]},
    {"paths": ["/"], "variant_id": "no-failover", "variant": [["/", [
        ["/", "qemu_binary", str((WRAPPERS / "no-failover").relative_to(REPO))], ["/", "no_snapshots", "true"],
        ["/", FAST_FAIL[0].removeprefix("--"), FAST_FAIL[1]]]]]},
]


@pytest.fixture(autouse=True)
def _image_ready(guest_image: GuestImage) -> None:
    """Skip (or error with --require-resources) where the host cannot run QEMU; prebuild the image."""


def test_one_job_passes_the_healthy_qemu_and_fails_the_broken_one_naming_the_check(tmp_path: Path) -> None:
    (tmp_path / "variants.json").write_text(json.dumps(VARIANTS))
    done = subprocess.run([sys.executable, "-m", "avocado", "run", "--job-results-dir", str(tmp_path),
                           "--json-variants-load", str(tmp_path / "variants.json"), f"failover:{CASE}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # avocado's "some test failed"
    (job,) = tmp_path.glob("job-*")
    results = json.loads((job / "results.json").read_text())
    tests = {t["name"].rsplit(";", 1)[-1]: t for t in results["tests"]}
    healthy, broken = tests["healthy"], tests["no-failover"]

    assert healthy["status"] == "PASS", healthy["fail_reason"]
    board = json.loads(healthy["whiteboard"])
    assert board["metrics"]["probes_lost"] >= 0 and board["metrics"]["max_gap_ms"] > 0, board["metrics"]
    assert all(line.startswith("PASS") for line in board["checks"].values())

    assert broken["status"] == "FAIL"
    assert "FAIL failover_negotiated: FAILOVER_NEGOTIATED events on the source: none" in broken["fail_reason"]
    assert "PASS" not in broken["fail_reason"]  # only the failed checks
    (evidence,) = (Path(broken["logdir"]) / "data" / "artifacts").iterdir()
    assert (evidence / "src-console.log").stat().st_size > 0
    assert (evidence / "src-qmp.jsonl").exists() and (evidence / "probes.jsonl").exists()
    assert (evidence / "paths.pcapng").exists() and (evidence / "timeline.png").exists()
    assert not (Path(healthy["logdir"]) / "data" / "artifacts").exists() or not any(
        (Path(healthy["logdir"]) / "data" / "artifacts").iterdir()), "a passing case kept its evidence"

    assert list((Path(healthy["logdir"]) / "data" / "results-timelines").glob("*.json.gz"))  # the harness's own
    xunit = (job / "results.xml").read_text()
    assert xunit.count("<testcase ") == 2 and xunit.count("<failure ") == 1
    assert 'message="FAIL failover_negotiated: ' in xunit
    assert "FAIL failover_negotiated" in (job / "results.html").read_text()
    for test in (healthy, broken):
        (pid,) = re.findall(r"pytest \(pid (\d+)\)", Path(test["logfile"]).read_text())
        assert leftovers(int(pid)) == []
