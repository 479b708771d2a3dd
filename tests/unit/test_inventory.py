"""The lab inventory: the sample loads, and every mistake is reported at its exact field with the file's name."""

from __future__ import annotations

import copy
import re
import tomllib
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.lab.inventory import IMPLICIT_PAIR, PairEnd, load_inventory, parse_inventory

SAMPLE_PATH = Path(__file__).resolve().parents[2] / "profiles" / "lab-example.toml"
SAMPLE: dict[str, Any] = tomllib.loads(SAMPLE_PATH.read_text())
DELETE = object()
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def edited(edits: dict[str, Any]) -> dict[str, Any]:
    """A copy of the sample with *edits* applied, each keyed by the field path the errors use."""
    data = copy.deepcopy(SAMPLE)
    for path, value in edits.items():
        *parents, last = [int(index) if index else key for key, index in _PATH_PART.findall(path)]
        node = data
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


def test_the_sample_loads() -> None:
    inv = load_inventory(SAMPLE_PATH)
    assert set(inv.hosts) == {"src", "dst"}
    src, dst = inv.hosts["src"], inv.hosts["dst"]
    assert src.vfs == ("0000:3b:02.0", "0000:3b:02.1") and dst.vfs == ("0000:3b:02.0",)
    assert src.key == Path("~/.ssh/lab_ed25519").expanduser() and dst.known_hosts is None
    assert (dst.port, dst.user, dst.host_key_check) == (22, "root", True)
    assert inv.peer.host == "local" and inv.peer.address == IPv4Interface("198.18.0.1/24")
    assert inv.failover_macs == ("52:54:00:fa:10:01", "52:54:00:fa:10:02")
    assert inv.thresholds.max_gap_ms == 1000.0
    assert inv.thresholds.migration_deadline_s == 120.0  # absent: the run configuration's default


def test_one_local_host_with_two_vfs_is_a_local_migration_lab() -> None:
    data = edited({"hosts.dst": DELETE})
    for field in ("user", "key", "known_hosts"):
        del data["hosts"]["src"][field]
    data["hosts"]["src"]["address"] = "local"
    inv = parse_inventory(data, "lab.toml")
    assert inv.hosts["src"].is_local and inv.hosts["src"].key is None
    assert inv.hosts["src"].standby_bridge == "br0"


# Two pairs at once, each host migrating to the other (each VF in one pair).
TWO_PAIRS = {
    "ab": {"source": {"host": "src", "vf": "0000:3b:02.0"}, "destination": {"host": "dst", "vf": "0000:3b:02.0"}},
    "ba": {"source": {"host": "dst", "vf": "0000:3b:02.1"}, "destination": {"host": "src", "vf": "0000:3b:02.1"}},
}


def with_pairs(edits: dict[str, Any] | None = None) -> dict[str, Any]:
    return edited({"hosts.dst.vfs": ["0000:3b:02.0", "0000:3b:02.1"], "pairs": copy.deepcopy(TWO_PAIRS),
                   **(edits or {})})


def test_without_pairs_the_one_pair_is_the_first_vf_of_the_first_two_hosts() -> None:
    (pair,) = load_inventory(SAMPLE_PATH).failover_pairs
    assert pair.name == IMPLICIT_PAIR and pair.index == 0 and pair.failover_mac == "52:54:00:fa:10:01"
    assert pair.ends == (PairEnd(host="src", vf="0000:3b:02.0"), PairEnd(host="dst", vf="0000:3b:02.0"))
    assert pair.hosts == ("src", "dst")


def test_without_pairs_one_host_migrates_between_its_first_two_vfs() -> None:
    data = edited({"hosts.dst": DELETE})
    (pair,) = parse_inventory(data, "lab.toml").failover_pairs
    assert [str(end) for end in pair.ends] == ["src VF 0000:3b:02.0", "src VF 0000:3b:02.1"]
    assert pair.hosts == ("src",)


def test_each_pair_takes_its_own_failover_mac_in_file_order() -> None:
    pairs = parse_inventory(with_pairs(), "lab.toml").failover_pairs
    assert [(p.name, p.index, p.failover_mac) for p in pairs] == [("ab", 0, "52:54:00:fa:10:01"),
                                                                   ("ba", 1, "52:54:00:fa:10:02")]
    assert str(pairs[1]) == "ba (dst VF 0000:3b:02.1 → src VF 0000:3b:02.1)"
    assert pairs[1].hosts == ("dst", "src")


def test_a_pair_may_be_a_local_migration_and_a_host_then_needs_no_second_vf_elsewhere() -> None:
    data = edited({"pairs": {"local": {"source": {"host": "src", "vf": "0000:3b:02.0"},
                                       "destination": {"host": "src", "vf": "0000:3b:02.1"}}}})
    (pair,) = parse_inventory(data, "lab.toml").failover_pairs
    assert pair.hosts == ("src",)


# (case, edits to the two-pair inventory, what the error must say).
PAIR_MISTAKES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-host", {"pairs.ba.source.host": "hv3"},
     "lab.toml: pairs.ba.source.host: 'hv3' is not a host of this inventory (hosts: src, dst)"),
    ("vf-not-in-the-hosts-list", {"pairs.ab.destination.vf": "0000:3b:02.7"},
     "lab.toml: pairs.ab.destination.vf: 0000:3b:02.7 is not in hosts.dst.vfs (0000:3b:02.0, 0000:3b:02.1): "
     "add it there, or take one of those"),
    ("vf-in-two-pairs", {"pairs.ba.destination.vf": "0000:3b:02.0"},
     "lab.toml: pairs.ba.destination.vf: src VF 0000:3b:02.0 is also pairs.ab.source's: a VF belongs to one pair"),
    ("source-and-destination-one-vf", {"pairs.ab.destination": {"host": "src", "vf": "0000:3b:02.0"}},
     "lab.toml: pairs.ab.destination.vf: src VF 0000:3b:02.0 is also pairs.ab.source's"),
    ("more-pairs-than-macs", {"failover_macs": ["52:54:00:fa:10:01"]},
     "lab.toml: pairs: 2 pairs but 1 failover_macs: each pair's guest takes a MAC of its own (the n-th pair the "
     "n-th): add 1 to failover_macs"),
    ("no-address-for-the-second-guest", {"peer.address": "198.18.0.253/24"},
     "lab.toml: peer.address: 198.18.0.253/24 leaves no address for the guest of pair 2 after it in "
     "198.18.0.0/24: the n-th pair's guest takes the n-th address after the peer's"),
    ("bad-vf-address", {"pairs.ab.source.vf": "3b:02.0"},
     "lab.toml: pairs.ab.source.vf: '3b:02.0' is not a PCI address like 0000:3b:02.0"),
    ("missing-destination", {"pairs.ab.destination": DELETE},
     "lab.toml: pairs.ab.destination: required: add it"),
    ("unknown-field", {"pairs.ab.mac": "52:54:00:fa:10:03"},
     "lab.toml: pairs.ab.mac: unknown field (a typo?)"),
    ("bad-pair-name", {"pairs.a b": TWO_PAIRS["ab"], "pairs.ab": DELETE},
     "lab.toml: pairs.a b: 'a b' is not a pair name"),
]


def test_relative_key_paths_are_taken_from_the_inventory_file(tmp_path: Path) -> None:
    text = SAMPLE_PATH.read_text().replace('key = "~/.ssh/lab_ed25519"             #',
                                           'key = "keys/lab"             #')
    lab = tmp_path / "lab.toml"
    lab.write_text(text)
    assert load_inventory(lab).hosts["src"].key == tmp_path / "keys" / "lab"


# (case, edits to the sample, what the error must say): each names the file and the exact field path.
MISTAKES: list[tuple[str, dict[str, Any], str]] = [
    ("bad-vf-address", {"hosts.src.vfs[1]": "3b:02.0"},
     "lab.toml: hosts.src.vfs[1]: '3b:02.0' is not a PCI address like 0000:3b:02.0"),
    ("duplicate-vf", {"hosts.src.vfs[1]": "0000:3B:02.0"},
     "lab.toml: hosts.src.vfs[1]: 0000:3b:02.0 is listed twice (also vfs[0])"),
    ("host-without-vfs", {"hosts.dst.vfs": []},
     "lab.toml: hosts.dst.vfs: must list at least 1 (it lists 0)"),
    ("one-host-one-vf", {"hosts.dst": DELETE, "hosts.src.vfs": ["0000:3b:02.0"]},
     "lab.toml: hosts.src.vfs: a single host needs at least two VFs"),
    ("peer-outside-test-range", {"peer.address": "10.0.0.1/24"},
     "lab.toml: peer.address: 10.0.0.1/24 is outside 198.18.0.0/15: the harness sends only inside that"),
    ("peer-subnet-wider-than-range", {"peer.address": "198.18.0.1/14"},
     "lab.toml: peer.address: 198.18.0.1/14 is outside 198.18.0.0/15"),
    ("peer-without-prefix", {"peer.address": "198.18.0.1"},
     "lab.toml: peer.address: '198.18.0.1' has no prefix length"),
    ("unknown-peer-host", {"peer.host": "nowhere"},
     "lab.toml: peer.host: 'nowhere' is neither 'local' nor a host of this inventory (hosts: src, dst)"),
    ("multicast-mac", {"failover_macs[0]": "53:54:00:fa:10:01"},
     "lab.toml: failover_macs[0]: 53:54:00:fa:10:01 is a multicast address: a failover MAC must be unicast"),
    ("globally-administered-mac", {"failover_macs[1]": "00:1b:21:0a:0b:0c"},
     "lab.toml: failover_macs[1]: 00:1b:21:0a:0b:0c is not locally administered"),
    ("duplicate-mac", {"failover_macs[1]": "52:54:00:FA:10:01"},
     "lab.toml: failover_macs[1]: 52:54:00:fa:10:01 is listed twice (also failover_macs[0])"),
    ("no-mac", {"failover_macs": []},
     "lab.toml: failover_macs: must list at least 1 (it lists 0)"),
    ("unknown-host-field", {"hosts.src.colour": "red"},
     "lab.toml: hosts.src.colour: unknown field (a typo?)"),
    ("unknown-top-level-field", {"peers": {}},
     "lab.toml: peers: unknown field (a typo?)"),
    ("missing-pf", {"hosts.src.pf": DELETE},
     "lab.toml: hosts.src.pf: required: add it"),
    ("bad-pf", {"hosts.src.pf": "ens1f0;reboot"},
     "lab.toml: hosts.src.pf: 'ens1f0;reboot' is not an interface name"),
    ("bad-address", {"hosts.src.address": "hv 1"},
     "lab.toml: hosts.src.address: 'hv 1' is neither \"local\" nor a hostname"),
    ("port-zero", {"hosts.src.port": 0},
     "lab.toml: hosts.src.port: Input should be greater than or equal to 1"),
    ("ssh-host-without-key", {"hosts.dst.key": DELETE},
     "lab.toml: hosts.dst.key: required for an SSH host"),
    ("ssh-field-on-local-host", {"hosts.dst.address": "local"},
     "lab.toml: hosts.dst.port: SSH setting on a local host"),
    ("shared-mgmt-address", {"hosts.dst.mgmt_address": "192.0.2.11"},
     "lab.toml: hosts.dst.mgmt_address: 192.0.2.11 is also hosts.src.mgmt_address"),
    ("ipv6-mgmt-address", {"hosts.dst.mgmt_address": "2001:db8::1"},
     "lab.toml: hosts.dst.mgmt_address: Input is not a valid IPv4"),
    ("bad-host-name", {"hosts.bad name": SAMPLE["hosts"]["src"]},
     "lab.toml: hosts.bad name: 'bad name' is not a host name"),
    ("bad-standby-bridge", {"hosts.src.standby_bridge": "br0 up"},
     "lab.toml: hosts.src.standby_bridge: 'br0 up' is not an interface name"),
    ("bad-threshold", {"thresholds.max_gap_ms": -1},
     "lab.toml: thresholds.max_gap_ms: Input should be greater than 0"),
]


@pytest.mark.parametrize(("inventory", "message"), [
    *(pytest.param(edited(e), m, id=case) for case, e, m in MISTAKES),
    *(pytest.param(with_pairs(e), m, id=f"pairs-{case}") for case, e, m in PAIR_MISTAKES)])
def test_each_mistake_names_its_field(inventory: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_inventory(inventory, "lab.toml")
    assert message in str(info.value)


def test_every_field_mistake_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_inventory(edited({"hosts.src.vfs[0]": "x", "peer.address": "10.0.0.1/24"}), "lab.toml")
    lines = str(info.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["hosts.src.vfs[0]", "peer.address"]


def test_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}/lab.toml: no such inventory file"):
        load_inventory(tmp_path / "lab.toml")


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text('failover_macs = ["52:54:00:fa:10:01"]\n[hosts.src]\naddress = hv1\n')
    with pytest.raises(ConfigError, match=rf"{lab}: not valid TOML: .*line 3"):
        load_inventory(lab)
