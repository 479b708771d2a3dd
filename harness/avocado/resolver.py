"""avocado's resolver of ``failover:`` references: ``failover:`` is every case of the checkout's testcases/,
``failover:NODE-ID-OR-PATH`` (relative to the checkout, as ``failover-harness list`` prints them) some."""

from __future__ import annotations

import logging

from avocado.core.nrunner.runnable import Runnable
from avocado.core.plugin_interfaces import Resolver
from avocado.core.resolver import ReferenceResolution, ReferenceResolutionResult

from harness.avocado.translate import KIND, collect, tags
from harness.errors import ConfigError

log = logging.getLogger(__name__)


class FailoverResolver(Resolver):  # type: ignore[misc]  # avocado has no type hints: Resolver is Any
    name = KIND
    description = f"failover-harness conformance cases: {KIND}:[NODE-ID or path under the checkout]"

    def resolve(self, reference: str) -> ReferenceResolution:
        prefix, colon, selection = reference.partition(":")
        if not colon or prefix != KIND:  # someone else's reference: the next resolver's turn
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND,
                                       info=f"not a {KIND}: reference")
        try:
            cases = collect(selection)
        except ConfigError as e:
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND, info=str(e))
        log.debug("%s: %d case(s)", reference, len(cases))
        return ReferenceResolution(reference, ReferenceResolutionResult.SUCCESS,
                                   [Runnable(KIND, case["case"], tags=tags(case)) for case in cases])
