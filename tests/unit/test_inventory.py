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
from harness.lab.inventory import load_inventory, parse_inventory

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


@pytest.mark.parametrize(("edits", "message"), [pytest.param(e, m, id=case) for case, e, m in MISTAKES])
def test_each_mistake_names_its_field(edits: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_inventory(edited(edits), "lab.toml")
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
