"""The HTML report's migration summary, from results.json test entries as ResultsJson keeps them."""

from __future__ import annotations

import re
from pathlib import Path

from harness.phases import PHASE_NAMES, phase_report
from harness.report import migration_summary_html, record_phases
from harness.timeline import Timeline
from tests.conftest import load_json_gz


def _entry(nodeid: str, outcome: str, metrics: dict[str, object],
           phases: list[tuple[str, object]]) -> dict[str, object]:
    return {"nodeid": nodeid, "outcome": outcome, "metrics": metrics,
            "migration_phases": {name.removeprefix("phase."): value for name, value in phases}}


def test_a_row_per_migration_with_its_phases(data_dir: Path) -> None:
    timeline = Timeline.from_dict(load_json_gz(data_dir / "flat-probes-1khz-tcg.timeline.json.gz"))
    recorded: list[tuple[str, object]] = []
    record_phases(lambda name, value: recorded.append((name, value)), phase_report(timeline).stats)
    hops: list[tuple[str, object]] = []
    for hop in (1, 2):
        record_phases(lambda name, value, hop=hop: hops.append((name.replace("phase.", f"phase.hop{hop}.", 1), value)),
                      phase_report(timeline).stats)
    table = migration_summary_html([
        _entry("testcases/test_migration.py::test_probes[acpi]", "passed",
               {"downtime_ms": 123.0, "switch_to_standby_ms": 14.1, "failback_ms": 1768.3}, recorded),
        _entry("testcases/test_migration.py::test_ping_pong", "failed", {"hop1.downtime_ms": 99.0}, hops),
        _entry("testcases/test_guest_behaviour.py::test_no_migration", "passed", {}, []),
    ])
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    assert len(rows) == 1 + 3  # the header, then one row per migration; the case without one has none
    assert len(re.findall("<th>", rows[0])) == 5 + len(PHASE_NAMES)
    cells = re.findall(r"<td>(.*?)</td>", rows[1])
    assert cells[0] == "test_probes[acpi]" and "passed" in cells[1] and cells[2:5] == ["123", "14", "1768"]
    # stop_copy: 130 ms without a reply, 130 probes lost; primary_coming_up: 415 ms, 473 lost.
    assert cells[5 + PHASE_NAMES.index("stop_copy")] == "130 / 130"
    assert cells[5 + PHASE_NAMES.index("primary_coming_up")] == "415 / 473"
    hop1, hop2 = (re.findall(r"<td>(.*?)</td>", row) for row in rows[2:])
    assert hop1[0] == "test_ping_pong (hop1)" and "failed" in hop1[1] and hop1[2] == "99" and hop2[2] == "-"


def test_no_migration_no_table() -> None:
    assert migration_summary_html([_entry("t::a", "passed", {}, [])]) == ""
