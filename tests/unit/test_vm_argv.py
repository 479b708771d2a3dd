"""QEMU argv built from a VM spec: the flat topology's failover rules (docs/topologies.md, "What a run does"),
checked on the real builder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import VMError
from harness.netns import Addressing
from harness.topologies.devices import PRIMARY_ID, STANDBY_ID, failover_devices, kernel_append
from harness.vm import VM, TapNetdev, VMPaths, VMSpec, build_argv


def _spec(**kw: object) -> VMSpec:
    a = Addressing()
    base = dict(name="src", qemu_binary="qemu-system-x86_64", accel="tcg", kernel=Path("/k"), initrd=Path("/i"),
                append=kernel_append(a), netdevs=(TapNetdev("hn0", "src-sby"), TapNetdev("hn1", "src-pri")),
                devices=failover_devices(a.failover_mac))
    base.update(kw)
    return VMSpec(**base)  # type: ignore[arg-type]


PATHS = VMPaths.for_vm("src", Path("/run/x"), Path("/art"))


def _devices(argv: list[str]) -> list[dict[str, object]]:
    return [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-device"]


def test_failover_pair_rules() -> None:
    devices = {d.get("id"): d for d in _devices(build_argv(_spec(), PATHS))}
    standby, primary = devices[STANDBY_ID], devices[PRIMARY_ID]
    assert standby["failover"] is True
    assert primary["failover_pair_id"] == STANDBY_ID
    assert primary["mac"] == standby["mac"]
    assert primary["romfile"] == ""  # else the destination refuses the stream (ROM ramblock bug)
    assert primary["bus"] != standby["bus"] and str(primary["bus"]).startswith("rp")


def test_standby_precedes_primary() -> None:
    ids = [d.get("id") for d in _devices(build_argv(_spec(), PATHS))]
    assert ids.index(STANDBY_ID) < ids.index(PRIMARY_ID)  # else QEMU never hides the primary


def test_accel_and_cpu() -> None:
    argv = build_argv(_spec(accel="kvm"), PATHS)
    assert argv[argv.index("-accel") + 1] == "kvm" and argv[argv.index("-cpu") + 1] == "host"
    argv = build_argv(_spec(), PATHS)
    assert argv[argv.index("-accel") + 1] == "tcg" and argv[argv.index("-cpu") + 1] == "max"


def test_destination_waits_for_incoming_on_own_taps() -> None:
    dst = _spec().as_destination("dst", (TapNetdev("hn0", "dst-sby"), TapNetdev("hn1", "dst-pri")))
    argv = build_argv(dst, VMPaths.for_vm("dst", Path("/run/x"), Path("/art")))
    assert argv[-2:] == ["-incoming", "defer"]
    assert "tap,id=hn0,ifname=dst-sby,script=no,downscript=no" in argv
    assert _devices(argv) == _devices(build_argv(_spec(), PATHS))


def test_sockets_and_logs() -> None:
    argv = build_argv(_spec(), PATHS)
    joined = " ".join(argv)
    assert "path=/run/x/src.qmp,server=off" in joined
    assert "path=/run/x/src.ctl,server=on,wait=off" in joined
    assert "path=/art/src-console.log" in joined
    assert argv.count("-serial") == 2  # console first (ttyS0), control channel second (ttyS1)


def test_kernel_append_carries_guest_addressing() -> None:
    a = Addressing()
    assert f"harness.mac={a.failover_mac}" in kernel_append(a)
    assert f"harness.addr={a.guest_ip}/24" in kernel_append(a)


def test_a_vm_never_launched_has_no_qmp_session_and_says_so() -> None:
    vm = VM(_spec(), PATHS)
    with pytest.raises(VMError, match="src: no QMP session"):
        vm.qmp.execute("query-status")
    vm.shutdown()  # idempotent, and harmless before a launch
