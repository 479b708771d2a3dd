"""``failover-harness``: the harness from the command line.

    failover-harness run [--profile TOML] [-- PYTEST-ARGS]   the conformance suite, reports in reports/
    failover-harness doctor [--inventory TOML]               what this host (or each lab host) can run, and fixes
    failover-harness certify --results JSON --inventory TOML the certification record of a run on the lab hosts
    failover-harness list [CASE...]                          the cases, what they need, which topologies have it
    failover-harness report [--open]                         summarise (or open) the last report
    failover-harness report --merge DIR... [--reports OUT]   one report from CI shards' (run --shard K/N)
    failover-harness soak [--migrations N]                   back and forth N times; metric distributions
    failover-harness compare --candidate-qemu PATH ...       did a QEMU or guest kernel change failover? (A/B)
    failover-harness trend DIR...                            headline metrics over many runs; outliers flagged
    failover-harness image                                   build (or find) the guest image
    failover-harness sweep [--inventory TOML]                remove what killed runs left behind (here, on the lab)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import webbrowser
from pathlib import Path
from typing import Any

import pytest

from harness import progress
from harness.compare.judgement import PracticalRule
from harness.compare.runner import DEFAULT_CASES as DEFAULT_COMPARED_CASES
from harness.config import CASES_DIR, DEFAULT_CACHE_DIR, build_config, load_profile
from harness.doctor import diagnose
from harness.errors import ConfigError, HarnessError
from harness.image import ImageBuilder
from harness.limits import derive_limits, limits_table, load_results_json, soak_samples, thresholds_toml
from harness.proc import call_passing_signals
from harness.report import failure_lines
from harness.stats import STATS
from harness.sweep import sweep_leftovers
from harness.topologies import TOPOLOGIES, bed_class

DEFAULT_REPORTS = Path("reports")
# The cases' measured durations (pytest-split's format), which --shard balances the shards by.
DURATIONS_FILE = "durations.json"


def _cases_dir(args: argparse.Namespace) -> Path:
    cases: Path = args.cases
    if not cases.is_dir():
        raise ConfigError(f"--cases: {cases} is not a directory (run from the repository checkout, "
                          "or give --cases PATH/testcases)")
    return cases


def _pytest_argv(args: argparse.Namespace, cases: Path, reports: Path) -> list[str]:
    """pytest on *cases* with progress lines and every report (JUnit, HTML, results.json, evidence) in *reports*."""
    return [sys.executable, "-m", "pytest", str(cases), "--progress", f"--qemu-binary={args.qemu_binary}",
            f"--junitxml={reports / 'junit.xml'}", f"--html={reports / 'report.html'}", "--self-contained-html",
            f"--results-json={reports / 'results.json'}", f"--artifacts-dir={reports / 'artifacts'}"]


def shard_arguments(shard: str | None, store_durations: bool, durations: Path) -> list[str]:
    """pytest-split's arguments for ``--shard K/N`` (this runner's share of the suite, balanced by the
    durations file) and ``--store-durations`` (refresh that file from this run)."""
    argv = []
    if shard is not None:
        k, sep, n = shard.partition("/")
        if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise ConfigError(f"--shard {shard!r}: give K/N with 1 <= K <= N, e.g. --shard 2/4 for the second of "
                              "four runners")
        argv += [f"--splits={n}", f"--group={k}", "--splitting-algorithm=least_duration"]
    if store_durations:
        argv.append("--store-durations")
    if argv:
        argv.append(f"--durations-path={durations}")
    return argv


def _run(args: argparse.Namespace) -> int:
    """Exec pytest on the suite exactly as `make conformance` does; its exit status is the verdict."""
    cases = _cases_dir(args)
    argv = _pytest_argv(args, cases, args.reports)
    argv += shard_arguments(args.shard, args.store_durations, cases / DURATIONS_FILE)
    if args.profile is not None:
        if not args.profile.is_file():
            raise ConfigError(f"--profile: {args.profile} does not exist (a TOML profile, see docs/user-guide.md)")
        argv.append(f"--harness-config={args.profile}")
    argv += [arg for arg in args.pytest_args if arg != "--"]
    args.reports.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def soak_table(results: dict[str, Any]) -> list[str]:
    """The soak's metric distributions as a table (from results.json's metric.<name>.<stat>)."""
    (test,) = results["tests"]
    metrics = test.get("metrics", {})
    names = sorted({k.rsplit(".", 1)[0] for k in metrics if k.endswith(".median")})
    if not names:  # the case ended before it recorded its distributions (a timeout, a crash)
        reason = failure_lines(str(test.get("message", "")))
        return [f"no distributions: the soak case {test['outcome']} before it recorded them"
                + (f" ({reason[-1]})" if reason else "")]
    lines = [f"{'metric':<32}" + "".join(f"{s:>12}" for s in STATS)]
    lines += [f"{name:<32}" + "".join(f"{metrics.get(f'{name}.{s}', ''):>12}" for s in STATS) for name in names]
    lines.append(f"migrations: {metrics.get('migrations')}, harness errors: {metrics.get('harness_errors')}, "
                 f"verdict: {test['outcome']}")
    return lines


def _soak(args: argparse.Namespace) -> int:
    """Run the soak case, then print each metric's distribution."""
    if args.migrations < 1:
        raise ConfigError(f"--migrations {args.migrations}: give at least 1")
    reports: Path = args.reports / "soak"
    argv = [*_pytest_argv(args, args.soak_dir, reports), f"--soak-migrations={args.migrations}"]
    argv += [arg for arg in args.pytest_args if arg != "--"]
    code = call_passing_signals(argv)
    results = reports / "results.json"
    recorded = json.loads(results.read_text()) if results.exists() else {}
    if recorded.get("tests"):  # none when the soak was interrupted before its case ended
        print("\n".join(soak_table(recorded)))
    return code


def _min_absolute(values: list[str]) -> dict[str, float]:
    rule = dict(PracticalRule().min_absolute)
    for value in values:
        unit, sep, number = value.partition("=")
        if not sep or unit not in rule:
            raise ConfigError(f"--min-absolute {value!r}: give UNIT=VALUE with UNIT one of {', '.join(rule)}")
        try:
            rule[unit] = float(number)
        except ValueError:
            raise ConfigError(f"--min-absolute {value!r}: {number!r} is not a number") from None
    return rule


def _compare(args: argparse.Namespace) -> int:
    """Both sides interleaved, then the judgement; exit 1 when a metric regressed or a check broke."""
    from harness.compare import compare
    from harness.compare.report import terminal_table, write_reports
    from harness.compare.runner import CompareSettings, SideSettings

    if not 0 <= args.min_relative < 10:
        raise ConfigError(f"--min-relative {args.min_relative}: give a fraction of the baseline's median, e.g. 0.1")
    settings = CompareSettings(
        baseline=SideSettings(args.baseline_qemu or args.qemu_binary, args.baseline_guest_kernel,
                              args.baseline_guest_modules),
        candidate=SideSettings(args.candidate_qemu or args.baseline_qemu or args.qemu_binary,
                               args.candidate_guest_kernel, args.candidate_guest_modules),
        reports=args.reports, cases_dir=_cases_dir(args), runs=args.runs, select=args.select,
        metrics=tuple(args.metric), profile=args.profile,
        pytest_args=tuple(arg for arg in args.pytest_args if arg != "--"),
        rule=PracticalRule(min_relative=args.min_relative, min_absolute=_min_absolute(args.min_absolute)))
    comparison = compare(settings)
    print("\n".join(terminal_table(comparison)))
    json_path, html_path = write_reports(comparison, args.reports)
    print(f"\nwrote {json_path} and {html_path}")
    return comparison.exit_status


def _trend(args: argparse.Namespace) -> int:
    """Exit 1 when the newest run is worse than the runs before it on any metric."""
    from harness import trend

    runs = [trend.load_run(path, tuple(args.metric) or trend.HEADLINE) for path in trend.find_results(args.paths)]
    series = trend.build_series(runs, PracticalRule())
    print(f"{len(runs)} runs, {len(series)} series")
    print("\n".join(trend.flagged_lines(series)) or "nothing flagged")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(trend.render_html(series, runs))
    print(f"\nwrote {args.out}")
    worse = trend.latest_worse(series, runs)
    if worse:
        named = ", ".join(f"{s.case.rsplit('::', 1)[-1]} {s.metric}" for s in worse)
        print(f"the newest run is worse on: {named}")
    return 1 if worse else 0


def _doctor(args: argparse.Namespace) -> int:
    if args.inventory is not None:
        from harness.lab.doctor import diagnose_inventory, render  # the lab package (paramiko): lab commands only
        from harness.lab.inventory import load_inventory

        by_host = diagnose_inventory(load_inventory(args.inventory))
        print("\n".join(render(by_host, args.inventory)))
        return 1 if any(f.ok is False for findings in by_host.values() for f in findings) else 0
    findings = diagnose(args.qemu_binary, args.cache_dir)
    for finding in findings:
        print(finding.render())
    failed = [f for f in findings if f.ok is False]
    print(f"\n{len(failed)} problem(s)" if failed else "\nthis host can run the flat topology")
    return 1 if failed else 0


def _limits(args: argparse.Namespace) -> int:
    """The limits the soak's and the suite's results give, against those in effect."""
    if args.soak is None and not args.suite:
        raise ConfigError("limits: give --soak (a soak's results.json) and/or --suite (a healthy suite run's)")
    current = build_config(load_profile(args.profile) if args.profile else None, {}, str(args.profile or "defaults"))
    soak = soak_samples(load_results_json(args.soak, "--soak"), str(args.soak)) if args.soak else None
    suites = [load_results_json(path, "--suite") for path in args.suite]
    derived = derive_limits(soak, suites, current.thresholds)
    print(f"soak: {args.soak or '-'} ({len(soak) if soak is not None else 0} migrations); "
          f"suite runs: {', '.join(map(str, args.suite)) or '-'}")
    print("\n".join(limits_table(derived)))
    print()
    print("\n".join(thresholds_toml(derived)))
    return 0


def _certify(args: argparse.Namespace) -> int:
    """Every input checked before any host is contacted or anything written; exit 0 only when certified."""
    from harness.lab.certification import CertificationRecord, collect_inventory_facts, load_results, write_record
    from harness.lab.inventory import load_inventory

    results = load_results(args.results)
    inventory = load_inventory(args.inventory)
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out: {args.out} is not a directory: give the directory for certification.json/.html")
    record = CertificationRecord.build(results, collect_inventory_facts(inventory),
                                       inventory.thresholds.model_dump(),
                                       sources={"results": str(args.results), "inventory": str(args.inventory)},
                                       pairs=inventory.failover_pairs)
    paths = write_record(record, args.out)
    print(record.verdict.upper())
    print("\n".join(f"  {reason}" for reason in record.reasons) or f"  {record.counts['passed']} case(s) passed")
    print(f"\nwrote {paths[0]} and {paths[1]}")
    return 0 if record.certified else 1


class _Collector:
    """A pytest plugin that keeps the collected items."""

    def __init__(self) -> None:
        self.items: list[pytest.Item] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


def describe_case(item: pytest.Item) -> dict[str, Any]:
    """A case: what it checks, what it needs from a topology, and which topologies have that."""
    needs = sorted({c for m in item.iter_markers("bed_needs") for c in m.args})
    doc = (getattr(getattr(item, "obj", None), "__doc__", None) or "").strip().splitlines()
    runs_on = {}
    for topology in TOPOLOGIES:
        missing = sorted(set(needs) - bed_class(topology).capabilities)
        runs_on[topology] = "yes" if not missing else f"no ({', '.join(missing)})"
    return {
        "case": item.nodeid,
        "needs": needs,
        "runs_on": runs_on,
        "markers": sorted({m.name for m in item.iter_markers()} & {"timing", "xfail", "allow_log"}),
        "about": doc[0] if doc else "",
    }


def _list(args: argparse.Namespace) -> int:
    collector = _Collector()
    selected = args.select or [str(_cases_dir(args))]
    code = pytest.main([*selected, "--collect-only", "-p", "no:terminal", "-p", "no:cacheprovider",
                        "-o", "addopts="], plugins=[collector])
    if code != 0:
        print(f"failover-harness: collecting the cases failed (pytest exit {code}); "
              f"run 'pytest --collect-only {' '.join(selected)}' to see why", file=sys.stderr)
        return int(code)
    cases = [describe_case(item) for item in collector.items]
    if args.json:
        print(json.dumps(cases, indent=2))
        return 0
    for case in cases:
        extra = f"  needs: {', '.join(case['needs'])}" if case["needs"] else ""
        marks = f"  [{', '.join(case['markers'])}]" if case["markers"] else ""
        runs_on = ", ".join(f"{topology} {verdict}" for topology, verdict in case["runs_on"].items())
        print(f"{case['case']}\n    {case['about']}\n    runs on: {runs_on}{extra}{marks}")
    print(f"\n{len(cases)} case(s)")
    return 0


def summarise(results: dict[str, Any]) -> list[str]:
    """The last run in a few lines: verdict counts, then every case with its outcome and failed checks."""
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(results.get("summary", {}).items()))
    run = results.get("run", {}).get("config", {})
    lines = [f"exit status {results.get('exit_status')}: {summary or 'no tests'}",
             f"qemu {run.get('qemu_binary', '?')}, accel {run.get('accel', '?')}, topology {run.get('topology', '?')}"]
    for test in results.get("tests", []):
        flaky = f" (flaky: {test['reruns']} rerun)" if test.get("reruns") else ""
        shard = f"  ({test['shard']})" if test.get("shard") else ""  # a merged run's
        lines.append(f"{test['outcome']:>8} {test['duration_s']:7.1f} s  {test['nodeid']}{flaky}{shard}")
        lines += [f"{'':19}{value}" for value in test.get("checks", {}).values()
                  if str(value).startswith("FAIL")]
    return lines


def _report(args: argparse.Namespace) -> int:
    reports: Path = args.reports
    if args.merge:
        from harness.report.merge import merge_reports

        merged = merge_reports(args.merge, reports)
        print("\n".join(summarise(merged)))
        print(f"\nmerged {len(merged['shards'])} shard(s) into {reports.resolve()}: report.html, junit.xml, "
              "results.json")
        return 0
    html, results = reports / "report.html", reports / "results.json"
    if args.open:
        if not html.exists():
            raise ConfigError(f"no report at {html}: run 'failover-harness run' (or make conformance) first")
        opened = webbrowser.open(html.resolve().as_uri())
        print(f"{'opened' if opened else 'no browser here; open it yourself'}: {html.resolve()}")
        return 0
    if not results.exists():
        raise ConfigError(f"no results at {results}: run 'failover-harness run' (or make conformance) first")
    print("\n".join(summarise(json.loads(results.read_text()))))
    print(f"\nHTML: {html.resolve()}" if html.exists() else "")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    removed = sweep_leftovers()
    if args.inventory is not None:
        from harness.lab.inventory import load_inventory
        from harness.lab.sweep import sweep_inventory

        removed += [f"and undid {item}" for item in sweep_inventory(load_inventory(args.inventory), args.cache_dir)]
    print("\n".join(f"removed {item}" for item in removed) or "nothing left behind by earlier runs")
    return 0


def _image(args: argparse.Namespace) -> int:
    image = ImageBuilder(args.cache_dir).get()
    print(f"kernel: {image.kernel}\ninitrd: {image.initrd}\nversion: {image.kernel_version}\nkey: {image.key}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="failover-harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qemu-binary", default="qemu-system-x86_64")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the conformance suite; reports in --reports")
    run.add_argument("--profile", type=Path, help="TOML profile (thresholds, options; see docs/user-guide.md)")
    run.add_argument("--shard", metavar="K/N", help="run the K-th of N shards, balanced by the cases' measured "
                     f"durations (<cases>/{DURATIONS_FILE}); merge them with 'report --merge'")
    run.add_argument("--store-durations", action="store_true",
                     help=f"write this run's case durations to <cases>/{DURATIONS_FILE} (what --shard balances by)")
    run.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest arguments (-k, -n 2, ...)")
    run.set_defaults(func=_run)
    soak = sub.add_parser("soak", help="migrate one guest back and forth under probes; metric distributions")
    soak.add_argument("--migrations", type=int, default=100)
    soak.add_argument("--soak-dir", type=Path, default=CASES_DIR.parent / "soak", help=argparse.SUPPRESS)
    soak.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest arguments")
    soak.set_defaults(func=_soak)
    comparing = sub.add_parser("compare", help="A/B: the same cases on two QEMUs or guest kernels, interleaved; "
                                                "per metric a statistical verdict")
    for side in ("baseline", "candidate"):
        comparing.add_argument(f"--{side}-qemu", metavar="PATH",
                               help="default: --qemu-binary" + (" (the baseline's)" if side == "candidate" else ""))
        comparing.add_argument(f"--{side}-guest-kernel", metavar="BZIMAGE", type=Path)
        comparing.add_argument(f"--{side}-guest-modules", metavar="DIR", type=Path)
    comparing.add_argument("--runs", type=int, default=10, help="runs per side (default 10)")
    comparing.add_argument("-k", dest="select", default=DEFAULT_COMPARED_CASES,
                           help=f"the cases (pytest -k; default: {DEFAULT_COMPARED_CASES!r})")
    comparing.add_argument("--metric", action="append", default=[], metavar="PATTERN",
                           help="judge only metrics matching this glob (repeatable; default: every judged metric)")
    comparing.add_argument("--min-relative", type=float, default=PracticalRule().min_relative,
                           help="a change counts from this fraction of the baseline's median (default 0.1)")
    comparing.add_argument("--min-absolute", action="append", default=[], metavar="UNIT=VALUE",
                           help="and from this much (defaults: " + ", ".join(
                               f"{u}={v:g}" for u, v in PracticalRule().min_absolute.items()) + ")")
    comparing.add_argument("--profile", type=Path, help="TOML profile for both sides")
    comparing.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest arguments")
    comparing.set_defaults(func=_compare)
    trending = sub.add_parser("trend", help="headline metrics over many runs' results.json; outliers flagged")
    trending.add_argument("paths", nargs="+", type=Path, metavar="DIR", help="directories of runs (searched for "
                          "results.json) or results.json files")
    trending.add_argument("--metric", action="append", default=[], metavar="PATTERN",
                          help="chart the metrics matching this glob (repeatable; default: the headline metrics)")
    trending.add_argument("--out", type=Path, default=DEFAULT_REPORTS / "trend.html",
                          help="default: reports/trend.html")
    trending.set_defaults(func=_trend)
    doctor = sub.add_parser("doctor", help="check this host, or the lab hosts of an inventory")
    doctor.add_argument("--inventory", type=Path, help="a lab inventory (TOML): check each of its hosts, over SSH")
    doctor.set_defaults(func=_doctor)
    certify = sub.add_parser("certify", help="the certification record (JSON and HTML) of a run on the lab hosts")
    certify.add_argument("--results", type=Path, required=True, help="the run's results.json")
    certify.add_argument("--inventory", type=Path, required=True, help="the lab inventory (TOML) the run used")
    certify.add_argument("--out", type=Path, default=DEFAULT_REPORTS,
                         help="where certification.json and .html go (default: reports/)")
    certify.set_defaults(func=_certify)
    limits = sub.add_parser("limits", help="limits derived from a soak's and a healthy suite run's results")
    limits.add_argument("--soak", type=Path, help="the results.json failover-harness soak wrote")
    limits.add_argument("--suite", type=Path, action="append", default=[],
                        help="the results.json of a suite run on a healthy setup (repeat it for several runs)")
    limits.add_argument("--profile", type=Path, help="compare with this profile's limits (default: the defaults)")
    limits.set_defaults(func=_limits)
    listing = sub.add_parser("list", help="list the cases and what they need")
    listing.add_argument("--json", action="store_true", help="as JSON")
    listing.add_argument("select", nargs="*", metavar="CASE",
                         help="only these node ids or paths, as pytest takes them (default: every case of --cases)")
    listing.set_defaults(func=_list)
    report = sub.add_parser("report", help="summarise the last report")
    report.add_argument("--open", action="store_true", help="open the HTML report in a browser")
    report.add_argument("--merge", nargs="+", type=Path, metavar="DIR",
                        help="merge these shards' report directories into --reports (JUnit, results.json, HTML)")
    report.set_defaults(func=_report)
    sweep = sub.add_parser("sweep", help="remove leftovers of killed runs")
    sweep.add_argument("--inventory", type=Path, default=None,
                       help="also undo what killed host-topology runs of this machine left on the lab's hosts")
    sweep.set_defaults(func=_sweep)
    sub.add_parser("image", help="build the guest image").set_defaults(func=_image)
    for command in (run, listing, comparing):
        command.add_argument("--cases", type=Path, default=CASES_DIR, help=f"default: {CASES_DIR}")
    for command in (run, report, soak):
        command.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="default: reports/")
    comparing.add_argument("--reports", type=Path, default=DEFAULT_REPORTS / "compare",
                           help="default: reports/compare/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    progress.set_sink(progress.sink_for(sys.stderr))
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return status
    except HarnessError as e:
        print(f"failover-harness: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader left (`failover-harness report | head`): nothing to say. Python would
        # flush stdout again at exit and print a traceback; give it somewhere to write.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        progress.set_sink(None)  # the sink writes to this call's stderr, which a caller may close


if __name__ == "__main__":
    sys.exit(main())
