"""Failover pairing preflight: each wrong pairing is one named problem, and QEMU's messages map to the same ones."""

from __future__ import annotations

import pytest

from harness.pairing import KINDS, explain_qemu_messages, pairing_problems
from harness.topologies.devices import failover_devices, second_pair_devices
from harness.vm import Device

MAC = "52:54:00:fa:00:ff"
RP0 = Device.of("pcie-root-port", "rp0", bus="pcie.0", chassis=1, addr="0x2")
RP1 = Device.of("pcie-root-port", "rp1", bus="pcie.0", chassis=2, addr="0x3")
RP2 = Device.of("pcie-root-port", "rp2", bus="pcie.0", chassis=3, addr="0x4")
STANDBY = Device.of("virtio-net-pci", "standby0", netdev="hn0", mac=MAC, bus="rp0", failover=True)


def _primary(driver: str = "e1000e", id: str | None = "primary0", **props: object) -> Device:
    base: dict[str, object] = dict(netdev="hn1", mac=MAC, bus="rp1", failover_pair_id="standby0", romfile="")
    return Device.of(driver, id, **(base | props))


def _kinds(devices: list[Device]) -> list[tuple[str, str]]:
    return [(p.kind, p.device) for p in pairing_problems(devices)]


def test_correct_pair_has_no_problems() -> None:
    assert pairing_problems([RP0, RP1, STANDBY, _primary()]) == []
    # A VF's MAC is set on the host, so vfio-pci without mac= is not a mismatch.
    assert pairing_problems([RP0, RP1, STANDBY, Device.of("vfio-pci", "primary0", host="0000:03:00.1", bus="rp1",
                                                          failover_pair_id="standby0")]) == []


@pytest.mark.parametrize(("devices", "kind", "device"), [
    ([RP0, RP1, STANDBY, _primary(id=None)], "primary-without-id", "e1000e #1"),
    ([RP0, RP1, RP2, STANDBY, _primary(), _primary(id="primary1", bus="rp2")], "two-primaries", "primary1"),
    ([RP0, STANDBY, _primary(bus="pcie.0", addr="0x5")], "primary-not-hotpluggable", "primary0"),
    ([RP0, STANDBY, _primary().without("bus")], "primary-not-hotpluggable", "primary0"),  # no bus: pcie.0
    ([RP0, RP1, STANDBY, _primary("igb")], "primary-multifunction", "primary0"),
    ([RP0, RP1, STANDBY, _primary(multifunction="on")], "primary-multifunction", "primary0"),
    ([RP0, RP1, STANDBY, _primary(addr="0x0.1")], "primary-multifunction", "primary0"),
    ([RP0, RP1, _primary(), STANDBY], "primary-before-standby", "primary0"),
    ([RP0, RP1, STANDBY, _primary(mac="52:54:00:FA:00:FE")], "mac-mismatch", "primary0"),
    ([RP0, RP1, STANDBY, _primary().without("mac")], "mac-mismatch", "primary0"),  # QEMU picks another MAC
    ([RP0, RP1, STANDBY, _primary(failover_pair_id="standby1")], "standby-missing", "primary0"),
    ([RP0, RP1, STANDBY.without("failover"), _primary()], "standby-missing", "primary0"),
])
def test_each_rule_reports_exactly_its_kind(devices: list[Device], kind: str, device: str) -> None:
    assert _kinds(devices) == [(kind, device)]
    problem = pairing_problems(devices)[0]
    assert problem.fatal == KINDS[kind].fatal and problem.qemu_says == KINDS[kind].qemu_says
    assert device in problem.plain or device == "e1000e #1"


def test_mac_case_is_ignored() -> None:
    assert pairing_problems([RP0, RP1, STANDBY, _primary(mac=MAC.upper())]) == []


def test_one_problem_per_extra_primary() -> None:
    extra = [_primary(id=f"primary{n}", bus=f"rp{n}") for n in (1, 2)]
    rp3 = Device.of("pcie-root-port", "rp3", bus="pcie.0", chassis=4, addr="0x5")
    devices = [RP0, RP1, RP2, rp3, STANDBY, _primary(bus="rp3"), *extra]
    assert _kinds(devices) == [("two-primaries", "primary1"), ("two-primaries", "primary2")]


def test_plain_words_name_devices_and_fix() -> None:
    (bus,) = pairing_problems([RP0, STANDBY, _primary(bus="pcie.0")])
    assert bus.plain == ("primary0 (e1000e) sits on pcie.0, which cannot hot-plug: "
                         "put it behind a pcie-root-port.")
    (mf,) = pairing_problems([RP0, RP1, STANDBY, _primary("igb")])
    assert "igb" in mf.plain and "vfio-pci" in mf.plain and "e1000e" in mf.plain
    (mac,) = pairing_problems([RP0, RP1, STANDBY, _primary(mac="52:54:00:fa:00:fe")])
    assert all(s in mac.plain for s in ("primary0", "standby0", "52:54:00:fa:00:fe", MAC))


def test_flags_follow_qemu() -> None:
    fatal = {kind for kind, k in KINDS.items() if k.fatal}
    assert fatal == {"primary-without-id", "two-primaries", "primary-not-hotpluggable", "primary-multifunction",
                     "standby-missing"}
    silent = {kind for kind, k in KINDS.items() if not k.qemu_says}
    assert silent == {"primary-before-standby", "mac-mismatch", "standby-missing"}


# As QEMU 10.0.2 prints them (see the failover facts reference, sections 2 and 4).
NO_ID = ('qemu-system-x86_64: -device {"driver":"e1000e","netdev":"hn1","mac":"52:54:00:fa:00:ff","bus":"rp1",'
         '"failover_pair_id":"standby0","romfile":""}: Device with failover_pair_id needs to have id')
SLOT = "qemu-system-x86_64: warning: failover: primary device must be in its own PCI slot"
TWO = "qemu-system-x86_64: Cannot attach more than one primary device to 'standby0': 'primary0' and 'primary1'"
BUS = ('qemu-system-x86_64: -device {"driver":"e1000e","id":"primary0","netdev":"hn1","mac":"52:54:00:fa:00:ff",'
       '"bus":"pcie.0","failover_pair_id":"standby0","romfile":""}: Bus \'pcie.0\' does not support hotplugging')


@pytest.mark.parametrize(("line", "kind", "device"), [
    (NO_ID, "primary-without-id", "?"),
    (SLOT, "primary-multifunction", "?"),
    (TWO, "two-primaries", "primary1"),
    (BUS, "primary-not-hotpluggable", "primary0"),
    ("Bus 'pcie.0' does not support hotplugging", "primary-not-hotpluggable", "?"),
])
def test_explains_qemu_messages(line: str, kind: str, device: str) -> None:
    (problem,) = explain_qemu_messages([line])
    assert (problem.kind, problem.device) == (kind, device)
    assert problem.qemu_says in line and problem.fatal


def test_explained_words_stand_alone() -> None:
    (two,) = explain_qemu_messages([TWO])
    assert two.plain == ("primary1 is a second primary for standby0, which already has primary0: "
                         "give each standby exactly one primary.")
    (slot,) = explain_qemu_messages([SLOT])
    assert slot.plain.startswith("the primary is multifunction") and "vfio-pci" in slot.plain


def test_unrelated_lines_and_repeats() -> None:
    assert explain_qemu_messages([
        "qemu-system-x86_64: warning: Primary device not found",
        "qemu-system-x86_64: -device {\"driver\":\"e1000e\",\"id\":\"primary0\"}: Property 'e1000e.netdev' "
        "can't find value 'nope'",
        "",
    ]) == []
    # The warning repeats at each STANDBY negotiation; it is one problem.
    assert len(explain_qemu_messages([SLOT, SLOT])) == 1


FLAT_PAIRINGS = {
    "correct": [],
    "primary-without-id": ["primary-without-id"],
    "two-primaries": ["two-primaries"],
    "primary-on-root-bus": ["primary-not-hotpluggable"],
    "igb-primary": ["primary-multifunction"],
    "primary-before-standby": ["primary-before-standby"],
    "mac-mismatch": ["mac-mismatch"],
}


@pytest.mark.parametrize(("pairing", "kinds"), FLAT_PAIRINGS.items())
def test_flat_bed_pairings_are_each_one_problem(pairing: str, kinds: list[str]) -> None:
    """The flat bed's deliberately broken pairings (used by testcases/test_pairing.py) are what they claim."""
    devices = failover_devices("52:54:00:fa:00:01", pairing=pairing)  # type: ignore[arg-type]
    assert [p.kind for p in pairing_problems(devices)] == kinds


def test_flat_bed_second_pair_is_clean() -> None:
    devices = failover_devices("52:54:00:fa:00:01") + second_pair_devices("52:54:00:fa:00:02")
    assert pairing_problems(devices) == []
