"""The probe's JSON-lines log turned into samples."""

from __future__ import annotations

from harness.traffic.probe import parse_probe_log


def test_pairs_sent_and_replies_first_reply_wins() -> None:
    lines = ['{"s": 0, "t": 1.0}', '{"s": 1, "t": 1.01}', '{"r": 0, "t": 1.002}', '{"r": 0, "t": 1.5}',
             '{"s": 2, "t": 1.02}', "", '{"r": 2, "t": 1.03}']
    samples = parse_probe_log(lines)
    assert [(s.seq, s.sent, s.received) for s in samples] == [(0, 1.0, 1.002), (1, 1.01, None), (2, 1.02, 1.03)]


def test_reply_without_send_record_is_ignored() -> None:
    assert parse_probe_log(['{"r": 7, "t": 2.0}']) == []
