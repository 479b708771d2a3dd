"""The migration timeline as one PNG: what happened, on which path, on one time axis.

Lanes, top to bottom: the source's and destination's migration states and
key QMP events, probe replies on the primary and on the standby path (as
seen on the host), unanswered probes with outage windows shaded, the guest
kernel's failover link events (secondary evidence, on the estimated clock),
and, when the case ran iperf3, throughput per 100 ms below. The migration's
phases (:mod:`harness.phases`) are the alternating bands, named along the
bottom with the probes lost in each.
"""

from __future__ import annotations

import io
import os
import tempfile
from types import ModuleType
from typing import TYPE_CHECKING

from harness.metrics import attribute, probe_stats
from harness.phases import PhaseReport, phase_report
from harness.timeline import Timeline

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STATE_COLOURS = {"setup": "#bbbbbb", "wait-unplug": "#f4a259", "active": "#5b8def", "device": "#8e44ad",
                 "completed": "#2ecc71", "failed": "#e74c3c", "cancelling": "#e67e22", "cancelled": "#c0392b"}
KEY_EVENTS = {"UNPLUG_PRIMARY": "#e67e22", "STOP": "#c0392b", "RESUME": "#27ae60", "FAILOVER_NEGOTIATED": "#2980b9"}
LANES = ["guest link", "lost", "standby path", "primary path", "dst", "src"]
PHASE_BANDS = ("#f2f2f2", "#ffffff")


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend (no display, no network); the first call imports it (~0.5 s)."""
    os.environ.setdefault("MPLCONFIGDIR", tempfile.gettempdir())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_png(timeline: Timeline, title: str = "", phases: PhaseReport | None = None) -> bytes:
    """Draw *timeline* (with its *phases*, computed here when not given); returns PNG bytes."""
    plt = pyplot()
    t0 = timeline.window_start
    has_tput = bool(timeline.throughput)
    fig, axes = plt.subplots(2 if has_tput else 1, 1, figsize=(12, 6.5 if has_tput else 4.8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]} if has_tput else None, squeeze=False)
    ax = axes[0][0]
    lane = {name: i for i, name in enumerate(LANES)}
    _draw_phases(ax, phases or phase_report(timeline), t0)
    _draw_states(ax, timeline, t0, lane)
    _draw_key_events(ax, timeline, t0, len(LANES) - 0.1)
    by_seq = attribute(timeline)
    for path, name in (("primary", "primary path"), ("standby", "standby path")):
        xs = [p.t - t0 for p in timeline.paths if p.path == path]
        ax.plot(xs, [lane[name]] * len(xs), "|", color="#2c3e50", markersize=9, alpha=0.6)
    unknown = [r.t - t0 for r in timeline.replies if r.seq not in by_seq]
    if timeline.paths and unknown:
        ax.plot(unknown, [lane["lost"] + 0.3] * len(unknown), "|", color="#7f8c8d", markersize=5)
    stats = probe_stats(timeline)
    received = {r.seq for r in timeline.replies}
    lost = [p.t - t0 for p in timeline.sent if p.seq not in received and t0 <= p.t <= timeline.window_end]
    ax.plot(lost, [lane["lost"]] * len(lost), "|", color="#e74c3c", markersize=9)
    for o in stats.outages:
        ax.axvspan(o.start - t0, o.end - t0, color="#e74c3c", alpha=0.12, lw=0)
        if o.ms >= 50:
            ax.text((o.start + o.end) / 2 - t0, lane["lost"] - 0.42, f"{o.ms:.0f} ms", ha="center", fontsize=7,
                    color="#c0392b")
    for g in (g for g in timeline.guest_events if g.t >= t0 - 0.5):
        ax.plot([g.t - t0], [lane["guest link"]], "D", color="#16a085", markersize=5)
        ax.text(g.t - t0, lane["guest link"] + 0.2, f"{g.kind} {g.detail}", fontsize=6.5, rotation=20)
    # From just before the migrate command to the end of observation; boot-time events fall outside.
    ax.set_xlim(-0.5, timeline.window_end - t0 + 0.2)
    ax.set_yticks(range(len(LANES)), LANES)
    ax.set_ylim(-1.1, len(LANES) + 0.05)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"migration {timeline.source} → {timeline.destination}", fontsize=10)
    if has_tput:
        tx = axes[1][0]
        for i in timeline.throughput:
            tx.plot([i.start - t0, i.end - t0], [i.bits_per_second / 1e6] * 2, color="#2c3e50")
        tx.set_ylabel("iperf3 Mbit/s")
        tx.grid(alpha=0.3)
    axes[-1][0].set_xlabel(f"seconds since migrate (t0 = {t0:.3f} host epoch)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _draw_states(ax: Axes, timeline: Timeline, t0: float, lane: dict[str, int]) -> None:
    for vm, name in ((timeline.source, "src"), (timeline.destination, "dst")):
        states = [e for e in timeline.events if e.vm == vm and e.name == "MIGRATION"]
        for i, e in enumerate(states):
            end = states[i + 1].ts if i + 1 < len(states) else max(e.ts, timeline.window_end)
            status = str(e.data.get("status"))
            ax.barh(lane[name], end - e.ts, left=e.ts - t0, height=0.5,
                    color=STATE_COLOURS.get(status, "#95a5a6"), edgecolor="white")
            if end - e.ts > 0.08 * max(timeline.window_end - timeline.window_start, 1e-3):
                ax.text(e.ts - t0 + 0.01, lane[name], status, va="center", fontsize=7)


def _draw_key_events(ax: Axes, timeline: Timeline, t0: float, top: float) -> None:
    names = {timeline.source: "src", timeline.destination: "dst"}
    key = [e for e in timeline.events if e.name in KEY_EVENTS and e.vm in names and e.ts >= t0 - 0.5]
    for i, e in enumerate(sorted(key, key=lambda e: e.ts)):
        ax.axvline(e.ts - t0, color=KEY_EVENTS[e.name], ls="--", lw=1)
        # Staggered: STOP, RESUME and the destination's negotiation fall within a few ms.
        ax.text(e.ts - t0 + 0.01, top - 0.22 * (i % 4), f"{names[e.vm]} {e.name}", fontsize=6.5,
                color=KEY_EVENTS[e.name])


def _draw_phases(ax: Axes, phases: PhaseReport, t0: float) -> None:
    """Each non-empty phase as a band behind the lanes, named at the bottom (in three rows: the
    baseline, switch and stop-and-copy can be a few ms) with the probes lost in it."""
    shown = [s for s in phases.stats if s.phase.ms > 0]
    for i, stats in enumerate(shown):
        phase = stats.phase
        ax.axvspan(phase.start - t0, phase.end - t0, color=PHASE_BANDS[i % 2], zorder=0, lw=0)
        label = phase.name.replace("_", " ") + (f", {stats.probes_lost} lost" if stats.probes_sent else "")
        ax.text(phase.start - t0 + 0.01, -0.6 - 0.2 * (i % 3), label, fontsize=6.5, color="#555555")
