"""Pairing: what QEMU and the guest do with a wrong primary/standby pairing, and whether the harness says so.

QEMU's failover pairs by device id (``failover_pair_id``), the guest's
net_failover by MAC. Mistakes surface at different times: some make QEMU
exit at start, one only warns when the guest negotiates, some are silent.
Each case checks QEMU's real behaviour and that the harness's preflight
(:mod:`harness.pairing`) names the problem in the same plain words as its
reading of QEMU's messages.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest

from harness.checks import CheckList
from harness.config import RunConfig
from harness.errors import DeadlineExceeded, VMError
from harness.pairing import KINDS, PairingProblem, explain_qemu_messages, pairing_problems
from harness.topologies import COMMAND_LINE_PAIRING, MISMATCHED_MAC, PRIMARY_ID, STANDBY_ID, FailoverBed

pytestmark = pytest.mark.bed_needs(COMMAND_LINE_PAIRING)

# Bed pairing → the problem the harness must name. All but the igb PF make QEMU
# exit at start; the igb PF is only refused when the guest negotiates, with a warning.
PAIRING_ERRORS = {
    "primary-without-id": "primary-without-id",
    "two-primaries": "two-primaries",
    "primary-on-root-bus": "primary-not-hotpluggable",
    "igb-primary": "primary-multifunction",
}
NEGOTIATION_TIMEOUT_S = 10.0


def _record_preflight(bed: FailoverBed, record_property: Any) -> list[PairingProblem]:
    """What the harness's preflight says of the bed's pairing (its logic is unit-tested on its own)."""
    problems = pairing_problems(bed.devices())
    record_property("run.preflight", " ".join(p.plain for p in problems) or "no pairing problem")
    return problems


@pytest.mark.parametrize("failover_bed", [
    # QEMU's refusal is what the case provokes: the log scan allows exactly that message.
    pytest.param({"pairing": pairing, "preflight": False, "build": False}, id=pairing,
                 marks=pytest.mark.allow_log(re.escape(KINDS[kind].qemu_says)))
    for pairing, kind in PAIRING_ERRORS.items()
], indirect=True)
def test_pairing_error_is_recognised(
    failover_bed: FailoverBed, harness_config: RunConfig, record_property: Any, request: pytest.FixtureRequest
) -> None:
    """QEMU refuses a broken pairing (at start, or at negotiation for an igb PF); the harness names it."""
    bed, checks = failover_bed, CheckList(record_property)
    kind = PAIRING_ERRORS[request.node.callspec.id]
    _record_preflight(bed, record_property)
    qemu_says = KINDS[kind].qemu_says
    try:
        bed.build()  # preflight off: QEMU gets the broken pairing
        started, error = True, ""
    except VMError as e:
        started, error = False, str(e)
    said = bed.qemu_messages()
    if kind == "primary-multifunction":
        # QEMU starts; the primary stays hidden, and its creation fails when the guest negotiates.
        with contextlib.suppress(DeadlineExceeded):
            bed.source.qmp.next_event("FAILOVER_NEGOTIATED", NEGOTIATION_TIMEOUT_S)
        said = bed.qemu_messages()
        present = PRIMARY_ID in bed.source.qmp.qom_children("/machine/peripheral")
        qemu_ok = started and not present
        detail = (f"QEMU started, primary {'present' if present else 'absent'} after negotiation; "
                  f"it said: {' | '.join(said) or 'nothing'}")
        view = bed.guest.failover()
        checks.check("guest_runs_on_standby_alone", view.standby is not None and view.primary is None,
                     view.describe())
    else:
        qemu_ok = not started
        detail = f"QEMU exited at start: {' | '.join(said)}" if not started else "QEMU started without complaint"
    checks.check("qemu_refused", qemu_ok and qemu_says in " ".join(said), f"{detail} (expected {qemu_says!r})")
    explained = [p for p in explain_qemu_messages(said) if p.kind == kind]
    checks.check("qemu_message_explained", bool(explained),
                 explained[0].plain if explained else f"no {kind} in QEMU's messages")
    if not started:
        checks.check("error_in_plain_words", bool(explained) and explained[0].plain in error,
                     f"the harness's error: {error.splitlines()[-1] if error else '-'}")
    checks.verify()


@pytest.mark.parametrize("failover_bed", [{"pairing": "primary-before-standby", "paused": True}], indirect=True,
                         ids=["primary-first"])
def test_primary_before_standby_is_never_hidden(
    failover_bed: FailoverBed, harness_config: RunConfig, record_property: Any
) -> None:
    """Documented QEMU behaviour (qtest hotplug/1_reverse): a primary created before its standby is not hidden."""
    bed, checks = failover_bed, CheckList(record_property)
    _record_preflight(bed, record_property)
    before = bed.source.qmp.qom_children("/machine/peripheral")
    checks.check("primary_visible_before_negotiation", PRIMARY_ID in before,
                 f"/machine/peripheral before the guest ran: {sorted(before)}")
    bed.resume()
    view = bed.guest.wait_primary_active(harness_config.thresholds.primary_restore_deadline_s)
    record_property("run.guest_view", view.describe())
    checks.check("guest_enslaves_it", view.primary_active, view.describe())
    checks.verify()


@pytest.mark.parametrize("failover_bed", [{"pairing": "mac-mismatch"}], indirect=True, ids=["mac-mismatch"])
def test_mac_mismatch_is_reported(failover_bed: FailoverBed, harness_config: RunConfig, record_property: Any) -> None:
    """QEMU pairs by id and plugs the primary; the guest pairs by MAC and leaves it alone; the harness says why."""
    bed, checks = failover_bed, CheckList(record_property)
    said = " ".join(p.plain for p in _record_preflight(bed, record_property) if p.kind == "mac-mismatch")
    negotiated = [e for e in bed.source.qmp.events if e.name == "FAILOVER_NEGOTIATED"]
    checks.check("failover_negotiated", any(e.data.get("device-id") == STANDBY_ID for e in negotiated),
                 f"FAILOVER_NEGOTIATED: {[e.data for e in negotiated] or 'none'}")
    present = PRIMARY_ID in bed.source.qmp.qom_children("/machine/peripheral")
    checks.check("primary_plugged_by_qemu", present, f"{PRIMARY_ID} {'in' if present else 'not in'} QOM")
    links = bed.guest.links()
    stray = [link for link in links if link.mac == MISMATCHED_MAC]
    checks.check("primary_not_enslaved", bool(stray) and all(link.master is None for link in stray),
                 "guest interfaces: " + ", ".join(f"{link.name}({link.driver},{link.mac},master={link.master})"
                                                  for link in links) + f". The harness's preflight: {said}")
    checks.verify()
