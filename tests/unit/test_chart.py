"""The timeline chart renders recorded timelines (probes and iperf3) to a PNG."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report.chart import render_png
from harness.timeline import Timeline
from tests.conftest import load_json_gz


@pytest.mark.parametrize("name", ["flat-probes-1khz-tcg", "flat-iperf3-tcg"])
def test_renders_png(data_dir: Path, name: str) -> None:
    timeline = Timeline.from_dict(load_json_gz(data_dir / f"{name}.timeline.json.gz"))
    png = render_png(timeline)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000  # lanes, bars and points, not an empty canvas
