"""iperf3 3.12 ``--json`` output (recorded across a real migration) placed on the host clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.traffic.iperf import MIN_SEND_TIMEOUT_MS, parse_iperf_json, send_timeout_ms
from tests.conftest import load_json_gz


@pytest.fixture
def recorded(data_dir: Path) -> dict:
    return load_json_gz(data_dir / "flat-iperf3-tcg.iperf3.json.gz")


def test_recorded_stream_survived(recorded: dict) -> None:
    result = parse_iperf_json(recorded, launched=1000.0)
    assert result.survived and result.error is None
    assert len(result.intervals) >= 115  # 12 s at 100 ms
    first = result.intervals[0]
    assert first.start == pytest.approx(1000.0) and first.end == pytest.approx(1000.1, abs=0.01)
    assert result.retransmits == 1069
    assert result.mean_mbps == pytest.approx(364.9, abs=0.1)
    assert min(i.bits_per_second for i in result.intervals) == 0.0  # the switch stalled the stream


def test_error_or_short_stream_did_not_survive(recorded: dict) -> None:
    broken = dict(recorded, error="unable to send control message: Broken pipe")
    assert not parse_iperf_json(broken, 0.0).survived
    short = dict(recorded, intervals=recorded["intervals"][:30])
    assert not parse_iperf_json(short, 0.0).survived
    assert not parse_iperf_json({"error": "unable to connect to server"}, 0.0).survived


def test_a_stream_is_declared_broken_only_past_what_tcps_backoff_may_wait_after_an_allowed_outage() -> None:
    # Flat limits (325 ms): the floor, 15 s, a healthy flat run's 5 s of unacknowledged data and then some.
    assert send_timeout_ms(325.0) == MIN_SEND_TIMEOUT_MS == 15000
    # Nested under TCG (13.93 s): a 5.5 s stop-and-copy left a stream's next retransmission past 15 s
    # (RTO 4.6 s, doubling); twice the allowed outage plus an RTO gives it its try after the restore.
    assert send_timeout_ms(13930.0) == 2 * 13930 + 5000
