"""The flake policy on plain pytest cases (no QEMU): what is retried, what never is, and how it is reported."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

CASES = """
    import pytest
    from pathlib import Path
    from harness.errors import ControlChannelLost, GuestBootFailed

    def _first_time(name):
        marker = Path(__file__).parent / name
        first = not marker.exists()
        marker.touch()
        return first

    @pytest.fixture
    def bed():
        if _first_time("boot"):
            raise GuestBootFailed("QEMU exited while the guest booted")
        return "bed"

    def test_boot_flakes_once(bed):
        assert bed == "bed"

    def test_channel_lost_twice():
        raise ControlChannelLost("control channel: closed by QEMU (QEMU still running)")

    def test_check_fails():
        if _first_time("check"):
            raise AssertionError("FAIL probes_lost: 5000 > 4000")
"""


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_environmental_failures_retry_once_conformance_failures_never(pytester: pytest.Pytester,
                                                                       workers: tuple[str, ...]) -> None:
    pytester.makepyfile(test_flaky=CASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml",
                                           "--results-json=results.json", *workers)
    # Flaky boot: passed on its retry. Lost channel: failed on both attempts. Failed check: not retried (it
    # would have passed the second time, which is exactly why it must not be).
    assert result.parseoutcomes() == {"passed": 1, "failed": 2, "rerun": 2}
    for line in ("*test_boot_flakes_once (setup): GuestBootFailed: QEMU exited while the guest booted*",
                 "*test_channel_lost_twice (call): ControlChannelLost*"):  # in the order the workers finished
        result.stdout.fnmatch_lines(["*flaky: retried once after an environmental error*", line])
    tests = {t["nodeid"].split("::")[1]: t for t in json.loads((pytester.path / "results.json").read_text())["tests"]}
    assert tests["test_boot_flakes_once"]["outcome"] == "passed" and tests["test_boot_flakes_once"]["reruns"] == 1
    assert tests["test_boot_flakes_once"]["run"]["retried"].startswith("once, after GuestBootFailed")
    assert "reruns" not in tests["test_check_fails"] and tests["test_check_fails"]["outcome"] == "failed"
    summary = json.loads((pytester.path / "results.json").read_text())["summary"]
    assert summary == {"passed": 1, "failed": 2, "flaky": 2}
    cases = list(ET.parse(pytester.path / "junit.xml").iter("testcase"))
    assert len(cases) == 3  # a retried case is one testcase, with its property
    flaky = next(c for c in cases if c.get("name") == "test_boot_flakes_once")
    assert {p.get("name") for p in flaky.iter("property")} >= {"run.retried"}


EMULATION_CASES = """
    import pytest
    from harness.errors import GuestSilent
    from harness.plugin import EMULATION_FAULT_KEY, FAILURE_KEY

    @pytest.fixture
    def bed(request):
        # As the failover_bed fixture does at teardown: the bed judges the failure.
        yield
        failure = request.node.stash.get(FAILURE_KEY, None)
        if isinstance(failure, GuestSilent):
            request.node.stash[EMULATION_FAULT_KEY] = f"the L2 guest fell silent ({failure})"

    def test_guest_falls_silent(bed):
        raise GuestSilent("guest did not answer 'fo-state' within 240 s")

    def test_check_fails(bed):
        raise AssertionError("FAIL probes_lost: 5000 > 4000")
"""


def test_a_failure_the_bed_calls_the_emulations_is_retried_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_emulation=EMULATION_CASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-json=results.json")
    assert result.parseoutcomes() == {"failed": 2, "rerun": 1}
    result.stdout.fnmatch_lines(["*flaky: retried once after an environmental error*",
                                 "*test_guest_falls_silent (call): the L2 guest fell silent*"])
    tests = {t["nodeid"].split("::")[1]: t for t in json.loads((pytester.path / "results.json").read_text())["tests"]}
    assert tests["test_guest_falls_silent"]["run"]["retried"].startswith("once, after the L2 guest fell silent")
    assert "reruns" not in tests["test_check_fails"]


LOG_SCAN_CASES = """
    import pytest
    from pathlib import Path
    from harness.errors import LogTrouble
    from harness.plugin import EMULATION_FAULT_KEY, FAILURE_KEY

    RESET = '{"event": "RESET", "data": {"guest": true, "reason": "guest-reset"}, "host_time": 1.0}'

    @pytest.fixture
    def bed(request, test_artifacts):
        # As a nested bed under TCG does at teardown: a reset with nothing on the console is the emulation's.
        yield test_artifacts
        failure = request.node.stash.get(FAILURE_KEY, None)
        if isinstance(failure, LogTrouble) and "guest reset" in str(failure):
            request.node.stash[EMULATION_FAULT_KEY] = "src reset itself with nothing on its console"

    def test_guest_resets_on_first_boot(bed):
        marker = Path(__file__).parent / "reset-once"
        if not marker.exists():
            marker.touch()
            (bed / "src-qmp.jsonl").write_text(RESET + "\\n")
"""


def test_log_trouble_is_put_to_the_bed_and_retried_when_it_is_the_emulations(pytester: pytest.Pytester) -> None:
    """Seen in make check on nested under TCG: every check passed, the log scan failed the case on an L2
    that had reset itself while booting. The scan's failure reaches the bed, which excuses it once."""
    pytester.makepyfile(test_logscan=LOG_SCAN_CASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--results-json=results.json")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}, result.stdout.str()
    (test,) = json.loads((pytester.path / "results.json").read_text())["tests"]
    assert test["run"]["retried"] == "once, after src reset itself with nothing on its console"
