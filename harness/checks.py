"""Named conformance checks: every check is recorded, then the test fails listing all that failed.

A migration case makes several independent judgements (completed, unplugged,
restored, loss, gap). Recording them all, rather than stopping at the first
failed ``assert``, gives a reader the whole verdict, and each check becomes a
JUnit property ``check.<name>`` and a row in the HTML report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    # Failed on time alone: every probe in the check's window was answered, some late (a stall, nothing
    # lost). Under an emulated hypervisor that is the emulation's doing (harness.topologies.emulated_nesting).
    held_back: bool = False

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@dataclass
class CheckList:
    """Collects check results; :meth:`verify` raises ``AssertionError`` naming every failed one."""

    record: Callable[[str, object], None] = lambda name, value: None
    results: list[CheckResult] = field(default_factory=list)
    prefix: str = ""

    def scope(self, prefix: str) -> CheckList:
        """The same list, naming its checks ``<prefix>.<name>`` (e.g. one scope per migration hop)."""
        return CheckList(self.record, self.results, f"{self.prefix}{prefix}.")

    def check(self, name: str, passed: bool, detail: str, *, held_back: bool = False) -> bool:
        result = CheckResult(f"{self.prefix}{name}", bool(passed), detail, held_back=held_back and not passed)
        self.results.append(result)
        self.record(f"check.{result.name}", result.line())
        return result.passed

    def at_most(self, name: str, measured: float | None, limit: float, unit: str = "", why: str = "") -> bool:
        """Pass when *measured* is known and ``<= limit``; the detail names both (and *why* the limit)."""
        why = f" ({why})" if why else ""
        if measured is None:
            return self.check(name, False, f"not measured (limit {limit:g}{unit}{why})")
        return self.check(name, measured <= limit, f"measured {measured:.1f}{unit}, limit {limit:g}{unit}{why}")

    def at_least(self, name: str, measured: float | None, limit: float, unit: str = "") -> bool:
        """Pass when *measured* is known and ``>= limit``; the detail names both."""
        if measured is None:
            return self.check(name, False, f"not measured (limit >= {limit:g}{unit})")
        return self.check(name, measured >= limit, f"measured {measured:.1f}{unit}, limit >= {limit:g}{unit}")

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def verify(self) -> None:
        __tracebackhide__ = True
        if self.failed:
            raise ChecksFailed(self.failed, len(self.results))


class ChecksFailed(AssertionError):
    """:meth:`CheckList.verify`'s failure: the failed checks, named in the message and kept in
    :attr:`failed` for whoever judges the failure (the flake policy)."""

    def __init__(self, failed: list[CheckResult], checked: int) -> None:
        super().__init__(f"{len(failed)} of {checked} checks failed:\n" + "\n".join(r.line() for r in failed))
        self.failed = failed
