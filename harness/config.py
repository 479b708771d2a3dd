"""One typed run configuration, validated once.

Sources, later wins: built-in defaults, a TOML profile (``--harness-config``),
command-line options. Every error names the offending field and the source it
came from, e.g. ``thresholds.max_gap_ms (from lab.toml): Input should be
greater than 0``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.distro_kernel import is_kernel_package
from harness.errors import ConfigError
from harness.logscan import compile_allow_list

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "failover-harness"
# The cases live in the repository next to the package (an editable install, as `make setup` does).
CASES_DIR = Path(__file__).resolve().parent.parent / "testcases"


class Thresholds(BaseModel):
    """Limits the conformance checks compare measurements against.

    Defaults are derived from measurements on a 2-core host under TCG (flat topology), each
    max(3 x the soak's p99, 1.5 x the largest value healthy suite runs showed), rounded up to 10
    (``failover-harness limits``; docs/user-guide.md, "Thresholds"): a KVM run should pass them with a
    margin.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The backstop, over the whole window. The limits of max_gap_ms and max_probes_lost are never below what
    # stop-and-copy may take (QEMU's downtime + stop_copy_tolerance_ms + one probe interval).
    max_probes_lost: int = Field(
        160, ge=0, description="probes without a reply in the migration window (a count at the probe rate)"
    )
    max_gap_ms: float = Field(325.0, gt=0, description="longest interval without a reply in the window")
    max_switch_to_standby_ms: float = Field(
        7800.0, gt=0, description="UNPLUG_PRIMARY to the first reply carried by the standby "
        "(native PCIe hotplug alone waits ~5 s: pciehp's attention-button delay)"
    )
    max_failback_ms: float = Field(1850.0, gt=0, description="destination RESUME to the first reply on the primary")
    # Failover's promise, phase by phase (harness.phases).
    max_source_standby_gap_ms: float = Field(
        150.0, gt=0, description="longest time without a reply while the source's standby alone carries: from "
        "the guest's release of the primary to the source's STOP"
    )
    max_destination_standby_gap_ms: float = Field(
        120.0, gt=0, description="longest time without a reply while the destination's standby alone carries: "
        "from its RESUME to the guest's registration of its primary (keep it below that phase's healthy "
        "length, else a standby that carries nothing passes)"
    )
    max_source_standby_scattered_loss_pct: float = Field(
        10.0, ge=0, le=100, description="of the probes sent while the source's standby alone carries, outside "
        "that phase's longest gap (judged by max_source_standby_gap_ms), the percentage never answered: a "
        "standby that drops frames while replies keep coming; exceeded only beyond chance (a path losing exactly "
        "this share would lose as many in under 1 % of phases)"
    )
    max_destination_standby_scattered_loss_pct: float = Field(
        10.0, ge=0, le=100, description="the same while the destination's standby alone carries"
    )
    stop_copy_tolerance_ms: float = Field(
        160.0, ge=0, description="the outage across stop-and-copy may exceed QEMU's own downtime by this much "
        "(plus one probe interval)"
    )
    max_primary_coming_up_ms: float = Field(
        50.0, gt=0, description="longest time without a reply from the guest's registration of its primary on "
        "the destination to the primary's first reply (net_failover drops the standby's traffic meanwhile); "
        "not below 50 ms: the registration is placed on the host clock within about 26 ms"
    )
    max_gap_after_restore_ms: float = Field(
        90.0, gt=0, description="longest time without a reply once the primary carries again"
    )
    min_throughput_after_resume_mbps: float = Field(
        1.0, ge=0, description="iperf3 mean throughput from destination RESUME to the end of the stream"
    )
    min_dirty_sync_count: int = Field(
        8, ge=1, description="memory-dirtying case: dirty-bitmap syncs the workload must force "
        "(an idle guest's migration needs 3-4)"
    )
    wait_unplug_deadline_s: float = Field(
        30.0, gt=0, description="harness deadline for the source to leave wait-unplug (QEMU has none)"
    )
    migration_deadline_s: float = Field(120.0, gt=0, description="migrate command to completed")
    primary_restore_deadline_s: float = Field(
        30.0, gt=0, description="destination resume to primary enslaved again in the guest"
    )


# Emulated NICs the flat topology can use as its primary.
PrimaryModel = Literal["vmxnet3", "e1000e"]


# What runs the nested topology's guest (L2) inside its L1s: whatever works (auto), or what a
# profile's limits were measured with (harness.topologies.nested.choose_l2_accel).
NestedL2Accel = Literal["auto", "kvm", "tcg"]
# What the bed does with the VF's failover MAC while the guest's primary is away (nested and host
# topologies; harness.sriov.mac_policy).
VfMacPolicy = Literal["shared", "vf-only", "cleared"]


class RunConfig(BaseModel):
    """Everything a run needs to know, checked once at start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    qemu_binary: str = "qemu-system-x86_64"
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    topology: Literal["flat", "nested", "host"] = "flat"
    # The flat topology's emulated primary (harness.topologies.flat says why vmxnet3).
    flat_primary: PrimaryModel = "vmxnet3"
    vf_mac_policy: VfMacPolicy = "shared"
    nested_l2_accel: NestedL2Accel = "auto"
    # The lab inventory (TOML) of the host topology; see harness.lab.inventory.
    inventory: Path | None = None
    guest_kernel: Path | None = None
    guest_modules: Path | None = None
    guest_memory_mib: int = Field(512, ge=128, le=16384)
    probe_rate_hz: float = Field(1000.0, ge=1, le=1000)
    iperf_duration_s: float = Field(12.0, ge=5, le=600)
    # UDP at this iperf3 bitrate (e.g. "100M") instead of TCP; None: TCP.
    iperf_udp_bitrate: str | None = Field(None, pattern=r"^\d+(\.\d+)?[KMG]?$")
    # The memory-dirtying case rewrites this much guest memory over and over
    # during its migration (keep it below a quarter of guest_memory_mib).
    dirty_workload_mib: int = Field(64, ge=0, le=4096)
    cache_dir: Path = DEFAULT_CACHE_DIR
    artifacts_dir: Path = Path("reports/artifacts")
    require_resources: bool = False
    # Start sources from a saved booted guest (harness.snapshot) where the bed allows it.
    snapshots: bool = True
    # host: a timing case runs with no other harness QEMU on the host (harness.isolation); shared: it
    # runs beside non-timing ones, for runs whose timing figures are not judged (broken setups).
    timing_isolation: Literal["host", "shared"] = "host"
    # Regexes of guest console or QEMU lines that do not fail a case (see harness.logscan).
    allow_log: tuple[str, ...] = ()
    thresholds: Thresholds = Thresholds()

    @field_validator("allow_log")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        compile_allow_list(patterns)
        return patterns

    @model_validator(mode="after")
    def _paths_exist(self) -> RunConfig:
        if self.topology == "host" and self.inventory is None:
            raise ValueError("topology host: give the lab inventory, --inventory lab.toml "
                             "(see profiles/lab-example.toml)")
        if self.vf_mac_policy != "shared" and self.topology == "flat":
            raise ValueError(f"vf_mac_policy {self.vf_mac_policy}: the flat topology's primary is no VF: "
                             "add --topology nested (or host)")
        if self.nested_l2_accel != "auto" and self.topology != "nested":
            raise ValueError(f"nested_l2_accel {self.nested_l2_accel}: only the nested topology runs its guest "
                             f"inside an L1 (this run's is {self.topology})")
        if self.flat_primary != "vmxnet3" and self.topology != "flat":
            raise ValueError(f"flat_primary {self.flat_primary}: only the flat topology emulates its primary "
                             f"(this run's is {self.topology}, whose primary is a VF)")
        if self.inventory is not None and self.topology != "host":
            raise ValueError(f"inventory: only the host topology uses one (this run's is {self.topology}): "
                             "add --topology host")
        if self.guest_kernel is not None and is_kernel_package(self.guest_kernel):
            if self.guest_modules is not None:
                raise ValueError(f"guest_modules: the kernel package {self.guest_kernel} brings its own modules: "
                                 "drop guest_modules")
        elif self.guest_kernel is not None and not self.guest_kernel.is_file():
            raise ValueError(f"guest_kernel: {self.guest_kernel} is not a file (give a bzImage, a kernel .deb, or "
                             "a package name such as linux-image-6.1.0-28-amd64)")
        if self.guest_modules is not None:
            if self.guest_kernel is None:
                raise ValueError("guest_modules: only meaningful together with guest_kernel")
            if not (self.guest_modules / "lib" / "modules").is_dir():
                raise ValueError(
                    f"guest_modules: {self.guest_modules} has no lib/modules "
                    "(give the INSTALL_MOD_PATH of 'make modules_install')"
                )
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "config"
        lines.append(f"{where} ({source}): {e['msg']}")
    return "; ".join(lines)


def load_profile(path: Path) -> dict[str, Any]:
    """Read a TOML profile; syntax errors name the file and line."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--harness-config: {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--harness-config: {path} is not valid TOML: {e}") from None


def build_config(profile: dict[str, Any] | None, overrides: dict[str, Any], source: str = "options") -> RunConfig:
    """Merge *profile* and command-line *overrides* (``None`` values ignored) and validate once."""
    merged: dict[str, Any] = dict(profile or {})
    thresholds = dict(merged.get("thresholds", {}))
    for key, value in overrides.items():
        if value is None:
            continue
        if key.startswith("thresholds."):
            thresholds[key.removeprefix("thresholds.")] = value
        else:
            merged[key] = value
    if thresholds:
        merged["thresholds"] = thresholds
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
