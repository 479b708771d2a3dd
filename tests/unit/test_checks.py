"""Named checks: every result recorded, and the verdict names every failure."""

from __future__ import annotations

import pytest

from harness.checks import CheckList


def test_all_failures_listed_with_values() -> None:
    recorded: list[tuple[str, object]] = []
    checks = CheckList(lambda n, v: recorded.append((n, v)))
    checks.check("migration_completed", True, "status completed")
    checks.check("primary_restored", False, "primary not restored: master=eth0 primary=none")
    checks.at_most("max_gap_ms", 5123.4, 4000, " ms")
    checks.at_most("probes_lost", None, 400)
    with pytest.raises(AssertionError) as info:
        checks.verify()
    text = str(info.value)
    assert "3 of 4 checks failed" in text
    assert "FAIL primary_restored: primary not restored" in text
    assert "FAIL max_gap_ms: measured 5123.4 ms, limit 4000 ms" in text
    assert "FAIL probes_lost: not measured" in text
    assert [n for n, _ in recorded] == ["check.migration_completed", "check.primary_restored",
                                         "check.max_gap_ms", "check.probes_lost"]


def test_passing_checks_verify_quietly() -> None:
    checks = CheckList()
    checks.at_most("max_gap_ms", 4000.0, 4000)
    checks.verify()
    assert not checks.failed


def test_scopes_prefix_names_and_share_the_verdict() -> None:
    recorded: list[tuple[str, object]] = []
    checks = CheckList(lambda n, v: recorded.append((n, v)))
    checks.check("failover_negotiated", True, "ok")
    checks.scope("hop1").check("primary_restored", True, "ok")
    checks.scope("hop2").at_most("max_gap_ms", 9000.0, 4000, " ms")
    assert [n for n, _ in recorded] == ["check.failover_negotiated", "check.hop1.primary_restored",
                                         "check.hop2.max_gap_ms"]
    with pytest.raises(AssertionError, match=r"1 of 3 checks failed:\nFAIL hop2.max_gap_ms: measured 9000.0 ms"):
        checks.verify()
