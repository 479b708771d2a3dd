"""The certification record: one JSON and one HTML document per run, for a NIC vendor certifying its VFs.

``failover-harness certify --results reports/results.json --inventory lab.toml`` reads what a run
wrote (:class:`harness.report.ResultsJson`), reads what identifies the system under test on every
inventory host (:func:`collect_host_facts`, reading only), and writes ``certification.json`` and
``certification.html``.

What a host contributes (:class:`HostFacts`): its kernel (``uname -r``); the QEMU under test (the
first line of ``--version``, which also names the package that built it); the PF's PCI address,
vendor/device/subsystem IDs (sysfs), driver, driver version and firmware (``ethtool -i``); each VF
the harness may take, with its IDs and the driver the host has bound (vfio-pci while a guest holds
it). Inside the guest the VF is driven by the guest kernel's own driver, so the record's guest kernel
(each case's ``run.guest_kernel``) is that driver's version. A value that cannot be read is a
*problem* of the facts, with its fix (``apt install ethtool``), not a crash: the record is still
written, and says what it lacks.

The summary verdict is "certified" only when every one of these holds, else "not certified" with
each reason:

- the results come from the host topology (a flat or nested run exercises QEMU's emulated NICs,
  whatever hosts the inventory names);
- at least one case passed, and no case failed or errored (each such case is named, with its failed
  checks); pytest itself ended normally;
- the run judged against the inventory's thresholds (the limits the lab declared);
- every host's facts are complete (a record must identify what it certifies);
- every case ran on a failover pair of the inventory (``run.pair``: the run used this inventory).

The record lists the inventory's failover pairs (its ``[pairs]``, or the one implicit pair), each
with the hosts and VFs it spans; which cases each pair ran is under ``run`` (in a run with xdist
workers, which worker, so which pair, takes a case changes from run to run).

Skipped and xfailed cases do not prevent it: they are counted, and listed with their reason. The
record does not know which cases the suite has, so a run restricted with ``-k`` lists fewer cases;
its reader sees that in the list.

Diffable: the JSON has sorted keys, cases sorted by node id, hosts by name. What changes from one run
to the next while nothing under test changed (times, durations, paths, retries, failure tracebacks,
per-case facts such as boot times) is under ``run`` alone, so that comparing two records without it
(``jq 'del(.run)'``) shows only real changes: versions, verdicts, metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.capabilities import parse_qemu_version
from harness.errors import ConfigError, HarnessError
from harness.guest import CommandResult
from harness.hosts import Host
from harness.lab.doctor import on_each_host
from harness.lab.inventory import HostSpec, Inventory, Pair, field_path
from harness.report import RESULTS_SCHEMA
from harness.sriov.sysfs import attribute, link_name
from harness.templating import render

log = logging.getLogger(__name__)

# Schema 2 only moved the raw timelines out of results.json; a record never reads them.
READABLE_SCHEMAS = (1, RESULTS_SCHEMA)

CERTIFICATION_SCHEMA = 1
CERTIFIED = "certified"
NOT_CERTIFIED = "not certified"
JSON_NAME = "certification.json"
HTML_NAME = "certification.html"
Verdict = Literal["passed", "failed", "error", "skipped", "xfailed"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
Scalar = bool | int | float | str | None
# Where the suite runs on the inventory's own VFs; every other topology emulates its NICs.
CERTIFYING_TOPOLOGIES = frozenset({"host"})
# Per-case run facts that describe the system rather than this run's timing: kept with the case.
# The others (boot time, isolation, peak RSS, clock offsets) go under "run"; guest_kernel goes to the top.
CASE_FACTS = ("accel", "l2_accel", "guest_accel")
# The metrics the HTML table shows for a case (a migration case records each per hop: hop1.max_gap_ms);
# the JSON has every metric.
KEY_METRICS = ("probes_lost", "max_gap_ms", "switch_to_standby_ms", "downtime_ms", "failback_ms",
               "throughput_after_resume_mbps", "final_path")
PCI_ID_FILES = ("vendor", "device", "subsystem_vendor", "subsystem_device")
# The Debian package of each tool the facts are read with (sysfs is read with coreutils' cat and readlink).
PACKAGES = {"ethtool": "ethtool", "uname": "coreutils"}
_COMMAND_NOT_FOUND = 127  # the remote shell's exit status; LocalHost reports a missing program alike

T = TypeVar("T")


# -- parsers (pure, tested on the tools' output) -----------------------------------------------------------------

@dataclass(frozen=True)
class EthtoolInfo:
    """What ``ethtool -i`` says of an interface's driver ("" where the driver reports nothing)."""

    driver: str
    version: str
    firmware_version: str
    bus_info: str


def parse_ethtool_info(text: str) -> EthtoolInfo:
    """``ethtool -i IFNAME`` output → its driver fields. ValueError if it has no ``driver:`` line."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")  # bus-info's value has colons of its own
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if not fields.get("driver"):
        raise ValueError(f"not the output of ethtool -i (no driver line): {text.strip()[:200]!r}")
    return EthtoolInfo(fields["driver"], fields.get("version", ""), fields.get("firmware-version", ""),
                       fields.get("bus-info", ""))


@dataclass(frozen=True)
class PciIds:
    """A PCI function's identity (lower-case hex, as ``lspci -n`` shows it): what a vendor certifies."""

    vendor: str
    device: str
    subsystem_vendor: str
    subsystem_device: str

    def __str__(self) -> str:
        return f"{self.vendor}:{self.device} (subsystem {self.subsystem_vendor}:{self.subsystem_device})"


def parse_pci_id(text: str) -> str:
    """A sysfs ID file's content (``0x8086``) → ``8086``. ValueError if it is not one."""
    m = re.fullmatch(r"0x([0-9a-fA-F]{4})", text.strip())
    if m is None:
        raise ValueError(f"not a PCI ID like 0x8086: {text.strip()[:40]!r}")
    return m.group(1).lower()


def parse_kernel_release(text: str) -> str:
    """``uname -r`` output → the release. ValueError if it is not one word."""
    release = text.strip()
    if len(release.split()) != 1:
        raise ValueError(f"not a kernel release: {release[:200]!r}")
    return release


def parse_qemu_version_line(text: str) -> str:
    """``qemu-system-x86_64 --version`` → its first line, ``QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-1)``:
    the version and the package that built it. ValueError if it is not QEMU's."""
    first = (text.strip().splitlines() or [""])[0].strip()
    if parse_qemu_version(first) is None:
        raise ValueError(f"not QEMU's --version output: {first[:200]!r}")
    return first


# -- a host's facts ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PfFacts:
    """The SR-IOV physical function (None: not read, see the host's problems)."""

    interface: str
    address: str | None
    ids: PciIds | None
    ethtool: EthtoolInfo | None


@dataclass(frozen=True)
class VfFacts:
    """A VF the inventory lets the harness take; *host_driver* "" when none is bound."""

    address: str
    ids: PciIds | None
    host_driver: str


@dataclass(frozen=True)
class HostFacts:
    """What identifies the system under test on one inventory host; *problems* says what could not be read."""

    name: str
    kernel: str | None
    qemu_binary: str
    qemu: str | None
    pf: PfFacts | None
    vfs: tuple[VfFacts, ...]
    problems: tuple[str, ...]


class _Reader:
    """Runs one host's commands; a failure becomes a problem (with its fix), so the other facts still come."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.problems: list[str] = []

    def parsed(self, argv: list[str], what: str, parse: Callable[[str], T], fix: str = "") -> T | None:
        result = self.host.run(argv)
        if result.rc != 0:
            self.problems.append(self._failure(argv, result, what, fix))
            return None
        try:
            return parse(result.output)
        except ValueError as e:
            self.problems.append(f"{what}: {e}")
            return None

    def _failure(self, argv: list[str], result: CommandResult, what: str, fix: str) -> str:
        tool = argv[0]
        if result.rc == _COMMAND_NOT_FOUND:
            fix = fix or (f"apt install {PACKAGES[tool]} on {self.host.name}" if tool in PACKAGES
                          else f"install {tool} on {self.host.name}")
            return f"{what}: {tool} is not installed on {self.host.name} (or not on its PATH). Fix: {fix}"
        last = (result.output.strip().splitlines() or [""])[-1][:200]
        return f"{what}: {shlex.join(argv)} exited {result.rc}: {last}" + (f". Fix: {fix}" if fix else "")

    def pci_ids(self, address: str, what: str) -> PciIds | None:
        values = []
        for name in PCI_ID_FILES:
            path = f"/sys/bus/pci/devices/{address}/{name}"
            text = attribute(self.host, path)
            if text is None:
                self.problems.append(f"{what}: no {path} on {self.host.name}: not a PCI function there")
                return None
            try:
                values.append(parse_pci_id(text))
            except ValueError as e:
                self.problems.append(f"{what}: {path}: {e}")
                return None
        return PciIds(*values)

    def pf(self, ifname: str) -> PfFacts:
        address = link_name(self.host, f"/sys/class/net/{ifname}/device")
        if not address:
            self.problems.append(f"PF {ifname}: no network interface {ifname!r} with a PCI device on "
                                 f"{self.host.name}. Fix: hosts.{self.host.name}.pf in the inventory "
                                 "(failover-harness doctor --inventory checks it)")
            return PfFacts(ifname, None, None, None)
        ethtool = self.parsed(["ethtool", "-i", ifname], f"PF {ifname}: driver and firmware", parse_ethtool_info)
        return PfFacts(ifname, address, self.pci_ids(address, f"PF {ifname}"), ethtool)

    def vf(self, address: str) -> VfFacts:
        ids = self.pci_ids(address, f"VF {address}")
        driver = link_name(self.host, f"/sys/bus/pci/devices/{address}/driver") if ids is not None else ""
        return VfFacts(address, ids, driver)


def collect_host_facts(host: Host, spec: HostSpec) -> HostFacts:
    """Read (never change) what identifies the system under test on *host*, the inventory's *spec* of it.

    Commands go through the :class:`~harness.hosts.Host` protocol, so tests hand it recorded
    output. A host that cannot be reached gives facts with that one problem.
    """
    reader = _Reader(host)
    try:
        kernel = reader.parsed(["uname", "-r"], "kernel release", parse_kernel_release)
        qemu = reader.parsed([spec.qemu_binary, "--version"], "QEMU under test", parse_qemu_version_line,
                             fix=f"install the QEMU under test on {host.name}, or name it in "
                                 f"hosts.{host.name}.qemu_binary")
        pf = reader.pf(spec.pf)
        vfs = tuple(reader.vf(address) for address in spec.vfs)
    except HarnessError as e:  # unreachable, refused, a command past its deadline
        log.warning("host %s: facts not read: %s", host.name, e)
        return HostFacts(host.name, None, spec.qemu_binary, None, None, (), (*reader.problems, f"not read: {e}"))
    return HostFacts(host.name, kernel, spec.qemu_binary, qemu, pf, vfs, tuple(reader.problems))


def collect_inventory_facts(inventory: Inventory) -> list[HostFacts]:
    """Every inventory host's facts, each host connected for it and closed after."""
    return list(on_each_host(inventory, collect_host_facts).values())


# -- the run's results -------------------------------------------------------------------------------------------

class _ResultsModel(BaseModel):
    """What the record reads of results.json; other fields (timelines, retries' messages) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ResultsEntry(_ResultsModel):
    """One test's entry in results.json."""

    nodeid: str = Field(min_length=1)
    outcome: Verdict
    duration_s: float = 0.0
    phases_s: dict[str, float] = {}
    metrics: dict[str, Scalar] = {}
    checks: dict[str, str] = {}
    run: dict[str, Scalar] = {}
    reruns: int = 0
    message: str | None = None


class _Config(_ResultsModel):
    topology: str
    thresholds: dict[str, Scalar]


class _RunSection(_ResultsModel):
    config: _Config


class RunResults(_ResultsModel):
    """A results.json document as :class:`harness.report.ResultsJson` writes it, validated."""

    started: float
    finished: float
    exit_status: int
    host: dict[str, Scalar] = {}
    run: _RunSection
    tests: list[ResultsEntry]


def parse_results(doc: object, source: str) -> RunResults:
    """Validate a results.json document read from *source*; a ConfigError names the field and the fix."""
    rerun = "run the suite again (failover-harness run writes reports/results.json)"
    if not isinstance(doc, dict) or "schema" not in doc:
        raise ConfigError(f"{source}: schema: missing: not a results.json of failover-harness; {rerun}")
    if doc["schema"] not in READABLE_SCHEMAS:
        raise ConfigError(f"{source}: schema: {doc['schema']!r}, but this harness reads results.json schema "
                          f"{' or '.join(map(str, READABLE_SCHEMAS))}: certify with the harness version that wrote "
                          f"it, or {rerun}")
    try:
        return RunResults.model_validate(doc)
    except ValidationError as e:
        errors = e.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {field_path(first['loc'])}: {first['msg']}{more}: not the results.json "
                          f"failover-harness writes; {rerun}") from None


def load_results(path: Path) -> RunResults:
    """Read and validate the results.json at *path*; every problem is a one-line ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--results: {path} does not exist: run the suite first (failover-harness run "
                          "writes reports/results.json)") from None
    except OSError as e:
        raise ConfigError(f"--results: {path}: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON ({e}): give the results.json a run wrote") from None
    return parse_results(doc, str(path))


# -- the record --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseRecord:
    """A case as the record states it; *reason* is a skip's or an expected failure's."""

    nodeid: str
    verdict: Verdict
    metrics: dict[str, Scalar]
    checks: dict[str, str]
    facts: dict[str, Scalar]
    reason: str | None

    @property
    def failed_checks(self) -> list[str]:
        return sorted(name for name, line in self.checks.items() if line.startswith("FAIL"))

    @property
    def key_metrics(self) -> dict[str, Scalar]:
        """The recorded metrics among KEY_METRICS (of each hop too), for the HTML's cases table."""
        return {name: value for name, value in self.metrics.items()
                if name.rsplit(".", 1)[-1] in KEY_METRICS and value is not None}


@dataclass(frozen=True)
class PairRecord:
    """A failover pair of the inventory: the VFs its guest starts on and migrates to, and its MAC."""

    name: str
    source_host: str
    source_vf: str
    destination_host: str
    destination_vf: str
    failover_mac: str

    @classmethod
    def of(cls, pair: Pair) -> PairRecord:
        return cls(pair.name, pair.source.host, pair.source.vf, pair.destination.host, pair.destination.vf,
                   pair.failover_mac)


def _exit_meaning(status: int) -> str:
    try:
        return pytest.ExitCode(status).name.lower().replace("_", " ")
    except ValueError:
        return "unknown"


def _threshold_differences(used: Mapping[str, Scalar], declared: Mapping[str, Scalar]) -> list[str]:
    return [f"{name} {used.get(name, 'not recorded')} (inventory: {value})"
            for name, value in sorted(declared.items()) if used.get(name) != value]


@dataclass(frozen=True)
class CertificationRecord:
    """The record of one run; see the module docstring for what it holds and when it says "certified"."""

    verdict: str
    reasons: tuple[str, ...]
    counts: dict[str, int]
    topology: str
    guest_kernel: str
    hosts: tuple[HostFacts, ...]
    pairs: tuple[PairRecord, ...]
    thresholds: dict[str, Scalar]
    cases: tuple[CaseRecord, ...]
    run: dict[str, Any]

    @property
    def certified(self) -> bool:
        return self.verdict == CERTIFIED

    @classmethod
    def build(cls, results: RunResults, hosts: Iterable[HostFacts], thresholds: Mapping[str, Scalar],
              sources: Mapping[str, str] | None = None, pairs: Sequence[Pair] = ()) -> CertificationRecord:
        """The record of *results* on *hosts* and the inventory's *pairs*, judged against *thresholds* (the
        inventory's).

        *sources* (what was read: the results and inventory paths) goes to the volatile ``run`` section.
        """
        tests = sorted(results.tests, key=lambda t: t.nodeid)
        cases = tuple(CaseRecord(t.nodeid, t.outcome, dict(t.metrics), dict(t.checks),
                                 {k: t.run[k] for k in CASE_FACTS if k in t.run},
                                 t.message if t.outcome in ("skipped", "xfailed") else None) for t in tests)
        counts: dict[str, int] = {verdict: 0 for verdict in VERDICTS}
        for case in cases:
            counts[case.verdict] += 1
        by_name = tuple(sorted(hosts, key=lambda h: h.name))
        used = results.run.config.thresholds
        ran_on = {name: sorted(t.nodeid for t in tests if t.run.get("pair") == name)
                  for name in dict.fromkeys(str(t.run["pair"]) for t in tests if t.run.get("pair") is not None)}
        known = {pair.name for pair in pairs}
        reasons = cls._reasons(results, cases, counts, by_name, _threshold_differences(used, thresholds))
        reasons += [f"{', '.join(nodeids)}: ran on pair {name!r}, which the inventory does not define: certify with "
                    "the inventory the run used" for name, nodeids in ran_on.items() if name not in known]
        releases = sorted({str(t.run["guest_kernel"]) for t in tests if t.run.get("guest_kernel")})
        return cls(
            verdict=NOT_CERTIFIED if reasons else CERTIFIED,
            reasons=tuple(reasons),
            counts=counts,
            topology=results.run.config.topology,
            guest_kernel=", ".join(releases) or "unknown: no case recorded run.guest_kernel (no guest booted, "
                                                "a --guest-kernel given without its modules, or results of a "
                                                "harness from before it did)",
            hosts=by_name,
            pairs=tuple(PairRecord.of(pair) for pair in pairs),
            thresholds=dict(used),
            cases=cases,
            run={
                "started": results.started,
                "finished": results.finished,
                "exit_status": results.exit_status,
                "harness_machine": dict(results.host),
                "sources": dict(sources or {}),
                "pairs": ran_on,
                "cases": {t.nodeid: {"duration_s": t.duration_s, "phases_s": dict(t.phases_s), "reruns": t.reruns,
                                     "message": None if t.outcome in ("skipped", "xfailed") else t.message,
                                     "facts": {k: v for k, v in t.run.items() if k not in CASE_FACTS}}
                          for t in tests},
            },
        )

    @staticmethod
    def _reasons(results: RunResults, cases: tuple[CaseRecord, ...], counts: dict[str, int],
                 hosts: tuple[HostFacts, ...], threshold_differences: list[str]) -> list[str]:
        """Why the run does not certify, in a fixed order; empty: it does."""
        reasons = []
        topology = results.run.config.topology
        if topology not in CERTIFYING_TOPOLOGIES:
            reasons.append(f"the results are from the {topology} topology, whose NICs QEMU emulates, not from "
                           "this inventory's VFs: certification takes a run of the host topology on them")
        failing = [c for c in cases if c.verdict in ("failed", "error")]
        for case in failing:
            checks = f" ({', '.join(case.failed_checks)} FAIL)" if case.failed_checks else ""
            reasons.append(f"{case.nodeid}: {case.verdict}{checks}")
        if not counts["passed"]:
            reasons.append(f"no case passed ({len(cases)} in the results): nothing was shown to work")
        if results.exit_status != 0 and not failing:
            reasons.append(f"pytest ended with exit status {results.exit_status} "
                           f"({_exit_meaning(results.exit_status)}): the run did not finish normally")
        if threshold_differences:
            reasons.append("the run judged against other thresholds than the inventory's: "
                           + "; ".join(threshold_differences))
        if not hosts:
            reasons.append("no host's facts: the record does not say what hardware it is about")
        reasons += [f"host {h.name}: {problem}" for h in hosts for problem in h.problems]
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CERTIFICATION_SCHEMA,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "counts": self.counts,
            "topology": self.topology,
            "guest_kernel": self.guest_kernel,
            "hosts": [dataclasses.asdict(h) for h in self.hosts],
            "pairs": [dataclasses.asdict(p) for p in self.pairs],
            "thresholds": self.thresholds,
            "cases": [dataclasses.asdict(c) for c in self.cases],
            "run": self.run,
        }

    def to_json(self) -> str:
        """Byte-identical for the same input: sorted keys, sorted cases and hosts, two-space indent."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def render_html(self) -> str:
        """A self-contained page: the verdict first, then hosts and NICs, failover pairs, topology and guest
        kernel, thresholds, cases, the run."""
        return render("certification.html.j2", record=self, schema=CERTIFICATION_SCHEMA)


def write_record(record: CertificationRecord, out: Path) -> tuple[Path, Path]:
    """Write ``certification.json`` and ``certification.html`` into *out* (made if absent); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / JSON_NAME, out / HTML_NAME
    json_path.write_text(record.to_json(), encoding="utf-8")
    html_path.write_text(record.render_html(), encoding="utf-8")
    return json_path, html_path
