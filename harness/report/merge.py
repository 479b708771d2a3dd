"""One report from a CI run's shards: JUnit, ``results.json`` and an HTML page of every case.

A shard is the directory ``failover-harness run --shard K/N`` wrote its reports to: ``junit.xml``,
``results.json`` with ``results-timelines/``, ``report.html`` and ``artifacts/`` (the evidence of failed
cases). The merge copies each shard's directory, untouched, to ``shards/shard-K/`` of the merged
directory (its pytest-html report and evidence keep working) and writes on top of them:

- ``results.json``: every shard's test entries, each naming its ``shard`` and with its timeline
  links pointing into ``shards/``; the summary counted again; ``shards`` lists where each came from;
- ``junit.xml``: one ``<testsuite>`` per shard under a ``<testsuites>`` that totals them;
- ``report.html``: the migration summary and every case with its verdict, failed checks and links to
  its shard's report and evidence.

Shards that ran different setups (another QEMU, topology or profile) or the same case twice are not
one run: the merge refuses them, naming what differs.
"""

from __future__ import annotations

import json
import logging
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.report import RESULTS_SCHEMA, failure_lines, migration_summary_html, safe_name, summary_counts
from harness.templating import render

log = logging.getLogger(__name__)

# Run settings that name where one shard's runner kept its files, not what the shard ran.
_PER_RUNNER_SETTINGS = frozenset({"artifacts_dir", "cache_dir"})
# pytest's exit statuses: 1 tests failed, 2 interrupted, 3 internal error, 4 usage error, 5 no tests.
_NO_TESTS = 5
SHARDS_DIR = "shards"


@dataclass(frozen=True)
class Shard:
    """One shard's reports as read from its directory."""

    name: str
    source: Path
    results: dict[str, Any]
    junit: ET.Element


def load_shard(directory: Path, name: str) -> Shard:
    """The reports in *directory*; ConfigError naming what is missing or unreadable."""
    results_path, junit_path = directory / "results.json", directory / "junit.xml"
    for path in (results_path, junit_path):
        if not path.is_file():
            raise ConfigError(f"--merge {directory}: no {path.name} in it; give the --reports directories of "
                              "'failover-harness run --shard K/N' runs")
    try:
        results = json.loads(results_path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"--merge {directory}: results.json is not JSON ({e}): the shard's run did not finish "
                          "writing it; run the shard again") from None
    schema = results.get("schema") if isinstance(results, dict) else None
    if schema != RESULTS_SCHEMA:
        raise ConfigError(f"--merge {directory}: results.json has schema {schema!r}, this harness merges schema "
                          f"{RESULTS_SCHEMA}: merge with the harness version that ran the shards")
    try:
        junit = ET.parse(junit_path).getroot()
    except ET.ParseError as e:
        raise ConfigError(f"--merge {directory}: junit.xml is not XML ({e})") from None
    return Shard(name, directory, results, junit)


def _check_one_run(shards: Sequence[Shard]) -> None:
    """ConfigError unless the shards ran the same settings and no case twice."""
    first = shards[0]
    settings = {k: v for k, v in first.results.get("run", {}).get("config", {}).items()
                if k not in _PER_RUNNER_SETTINGS}
    for shard in shards[1:]:
        theirs = shard.results.get("run", {}).get("config", {})
        differ = sorted(k for k in settings.keys() | (theirs.keys() - _PER_RUNNER_SETTINGS)
                        if settings.get(k) != theirs.get(k))
        if differ:
            said = "; ".join(f"{k}: {first.name} {settings.get(k)!r}, {shard.name} {theirs.get(k)!r}" for k in differ)
            raise ConfigError(f"--merge: the shards ran different setups ({said}): merge only the shards of one run, "
                              "started with the same options and profile")
    seen: dict[str, str] = {}
    for shard in shards:
        for test in shard.results.get("tests", []):
            if (other := seen.setdefault(test["nodeid"], shard.name)) != shard.name:
                raise ConfigError(f"--merge: {test['nodeid']} ran in {other} and in {shard.name}: shards split "
                                  "with the same --shard N and durations file never share a case")


def merged_exit_status(statuses: Sequence[int]) -> int:
    """The run's pytest exit status from its shards': the gravest failure; a shard with no tests (more
    shards than cases) is no failure when another ran some."""
    failures = [s for s in statuses if s not in (0, _NO_TESTS)]
    if failures:
        return max(failures)
    return _NO_TESTS if all(s == _NO_TESTS for s in statuses) else 0


def merge_results(shards: Sequence[Shard]) -> dict[str, Any]:
    """One results.json document from the shards' (entries keep their order, shard by shard). Pure."""
    _check_one_run(shards)
    tests: list[dict[str, Any]] = []
    for shard in shards:
        for entry in shard.results.get("tests", []):
            merged = {**entry, "shard": shard.name}
            if files := entry.get("data_files"):  # relative to the shard's results.json, now under shards/
                merged["data_files"] = {n: f"{SHARDS_DIR}/{shard.name}/{path}" for n, path in files.items()}
            tests.append(merged)
    docs = [s.results for s in shards]
    return {
        "schema": RESULTS_SCHEMA,
        "started": min(d["started"] for d in docs),
        "finished": max(d["finished"] for d in docs),
        "exit_status": merged_exit_status([int(d["exit_status"]) for d in docs]),
        "host": docs[0].get("host", {}),
        "run": docs[0].get("run", {}),
        "shards": [{"name": s.name, "source": str(s.source), "exit_status": s.results["exit_status"],
                    "started": s.results["started"], "finished": s.results["finished"],
                    "host": s.results.get("host", {}), "summary": s.results.get("summary", {})} for s in shards],
        "summary": summary_counts(tests),
        "tests": tests,
    }


_JUNIT_COUNTS = ("tests", "failures", "errors", "skipped")


def merge_junit(shards: Sequence[Shard]) -> ET.Element:
    """``<testsuites>`` holding each shard's ``<testsuite>`` (renamed after its shard), with the totals. Pure."""
    root = ET.Element("testsuites")
    totals = dict.fromkeys(_JUNIT_COUNTS, 0)
    time = 0.0
    for shard in shards:
        suites = [shard.junit] if shard.junit.tag == "testsuite" else list(shard.junit.iter("testsuite"))
        for suite in suites:
            copy = ET.fromstring(ET.tostring(suite))
            copy.set("name", f"{suite.get('name', 'pytest')} ({shard.name})")
            for key in _JUNIT_COUNTS:
                totals[key] += int(suite.get(key, 0))
            time += float(suite.get("time", 0))
            root.append(copy)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{time:.3f}")
    return root


@dataclass(frozen=True)
class _CaseRow:
    nodeid: str
    outcome: str
    shard: str
    duration_s: float
    reasons: tuple[str, ...]
    report: str
    evidence: str | None


def _case_row(entry: dict[str, Any], evidence_of: dict[str, str]) -> _CaseRow:
    failed_checks = [str(v) for v in entry.get("checks", {}).values() if str(v).startswith("FAIL")]
    if entry["outcome"] in ("passed", "xfailed", "skipped") and not failed_checks:
        reasons = [str(entry["message"]).splitlines()[0]] if entry.get("message") else []
    else:
        reasons = failed_checks or failure_lines(str(entry.get("message", "")))[-1:]
    return _CaseRow(entry["nodeid"], entry["outcome"], entry["shard"], entry.get("duration_s", 0.0), tuple(reasons),
                    f"{SHARDS_DIR}/{entry['shard']}/report.html", evidence_of.get(entry["nodeid"]))


def merged_html(results: dict[str, Any], evidence_of: dict[str, str]) -> str:
    """The merged run as one self-contained page; *evidence_of* maps a node id to its evidence directory
    (relative to the page). Pure."""
    rows = [_case_row(entry, evidence_of) for entry in results["tests"]]
    order = {"failed": 0, "error": 1, "xpassed": 2, "passed": 3, "xfailed": 4, "skipped": 5}
    rows.sort(key=lambda r: (order.get(r.outcome, 9), r.nodeid))  # what needs reading first
    return render("merged_report.html.j2", results=results, rows=rows,
                  migrations=migration_summary_html(results["tests"]))


def _evidence(shard: Shard, target: Path) -> dict[str, str]:
    """Node id → its evidence directory under the merged directory, for each failed case that kept one."""
    found = {}
    for entry in shard.results.get("tests", []):
        directory = target / "artifacts" / safe_name(entry["nodeid"])
        if directory.is_dir():
            found[entry["nodeid"]] = f"{SHARDS_DIR}/{shard.name}/artifacts/{directory.name}"
    return found


def merge_reports(directories: Sequence[Path], out: Path) -> dict[str, Any]:
    """Merge the shards' reports in *directories* into *out*; the merged results.json document.

    Everything is read and checked before anything is written."""
    if not directories:
        raise ConfigError("--merge: give the shards' report directories")
    shards = [load_shard(d, f"shard-{i}") for i, d in enumerate(directories, 1)]
    results = merge_results(shards)
    junit = merge_junit(shards)
    resolved = {d.resolve() for d in directories}
    if out.resolve() in resolved or any(out.resolve().is_relative_to(d) for d in resolved):
        raise ConfigError(f"--reports {out}: it is (inside) a shard's directory; give a directory of its own")
    out.mkdir(parents=True, exist_ok=True)
    evidence_of: dict[str, str] = {}
    for shard in shards:
        target = out / SHARDS_DIR / shard.name
        if target.exists():
            shutil.rmtree(target)  # a previous merge into the same directory
        shutil.copytree(shard.source, target, symlinks=True)
        evidence_of |= _evidence(shard, target)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    ET.ElementTree(junit).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    (out / "report.html").write_text(merged_html(results, evidence_of))
    log.info("merged %d shard(s), %d case(s) into %s", len(shards), len(results["tests"]), out)
    return results
