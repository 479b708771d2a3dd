"""The HTML report's tables (a test's properties, the run's migrations) show values as text, escaped."""

from __future__ import annotations

from harness.report import migration_summary_html, properties_table

HOSTILE = "<script>alert('x')</script> & more"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"


def test_the_properties_table_escapes_names_and_values_and_colours_checks() -> None:
    table = properties_table([("metric.max_gap_ms", 12.5), ("check.logs_clean", f"FAIL {HOSTILE}"),
                              (f"check.{HOSTILE}", "PASS"), ("data.timeline", "{}"), ("other", 1)])
    assert "<script>" not in table
    assert f'<td style="color:#c00;font-weight:bold">FAIL {ESCAPED}</td>' in table
    assert f'<td>check.{ESCAPED}</td><td style="color:#0a0">PASS</td>' in table
    assert "<td>metric.max_gap_ms</td><td>12.5</td>" in table
    assert "data.timeline" not in table and "other" not in table
    assert properties_table([("data.timeline", "{}")]) == ""


def test_the_migration_summary_escapes_case_names_and_verdicts() -> None:
    table = migration_summary_html([{"nodeid": f"t.py::test_x[{HOSTILE}]", "outcome": f"failed {HOSTILE}",
                                     "metrics": {}, "migration_phases": {"stop_copy.max_gap_ms": 130.2}}])
    assert "<script>" not in table
    assert f"<td>test_x[{ESCAPED}]</td>" in table
    assert f'<span class="failed">failed {ESCAPED}</span>' in table
    # An expected failure is coloured as pytest-html colours it, not as a failure.
    expected = {"nodeid": "t.py::test_y", "outcome": "xfailed", "metrics": {},
                "migration_phases": {"stop_copy.max_gap_ms": 1}}
    assert '<span class="xfailed">xfailed</span>' in migration_summary_html([expected])
