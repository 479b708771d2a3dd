"""Snapshot keys and the create-once store (no QEMU: the key is pure, the store is files and a lock)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from harness.snapshot import SnapshotStore, snapshot_key
from harness.vm import TapNetdev, VMSpec


@pytest.fixture
def spec(tmp_path: Path) -> VMSpec:
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\n")
    return VMSpec(name="src", qemu_binary=str(qemu), accel="tcg", kernel=Path("/img/k"), initrd=Path("/img/i"),
                  append="console=ttyS0 harness.addr=198.18.0.2/24",
                  netdevs=(TapNetdev("hn0", "src-sby"), TapNetdev("hn1", "src-pri")))


def test_key_ignores_what_differs_per_test(spec: VMSpec) -> None:
    same = replace(spec, name="boot", netdevs=(TapNetdev("hn0", "boot-sby"), TapNetdev("hn1", "boot-pri")))
    assert snapshot_key(spec) == snapshot_key(same) == snapshot_key(replace(spec, incoming=True))


def test_key_changes_with_the_machine(spec: VMSpec, tmp_path: Path) -> None:
    assert snapshot_key(spec) != snapshot_key(replace(spec, append=spec.append + " quiet"))
    assert snapshot_key(spec) != snapshot_key(replace(spec, memory_mib=1024))
    assert snapshot_key(spec) != snapshot_key(replace(spec, accel="kvm"))
    assert snapshot_key(spec) != snapshot_key(replace(spec, kernel=Path("/other-image/k")))
    other = tmp_path / "other-qemu"
    shutil.copy(spec.qemu_binary, other)
    assert snapshot_key(spec) != snapshot_key(replace(spec, qemu_binary=str(other)))
    rebuilt = snapshot_key(spec)
    Path(spec.qemu_binary).write_text("#!/bin/sh\n# rebuilt\n")
    assert snapshot_key(spec) != rebuilt


def test_store_creates_once_and_never_keeps_a_partial_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    with pytest.raises(RuntimeError), store.creating("k1") as partial:
        assert partial is not None
        partial.write_text("half a stream")
        raise RuntimeError("QEMU died while saving")
    assert not store.path("k1").exists() and not list(store.directory.glob("*.partial"))
    with store.creating("k1") as partial:
        assert partial is not None
        partial.write_text("stream")
    assert store.path("k1").read_text() == "stream"
    with store.creating("k1") as partial:
        assert partial is None  # there already: restore it


def test_a_killed_savers_partial_file_is_removed_by_the_next_saver(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    store.directory.mkdir()
    (store.directory / "k2.999999.partial").write_text("killed mid-write")
    with store.creating("k2") as partial:
        assert partial is not None
        partial.write_text("stream")
    assert [p.name for p in store.directory.iterdir() if not p.name.endswith(".lock")] == ["k2.mig"]
    store.drop("k2")
    assert not store.path("k2").exists()
