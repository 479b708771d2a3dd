"""The recorders' JSON-lines logs turned into timeline records."""

from __future__ import annotations

from harness.timeline import PathSeen, ProbeReply, ProbeSent
from harness.traffic.probe import parse_capture_log, parse_probe_log


def test_probe_log_keeps_duplicates_and_stats() -> None:
    lines = ['{"s": 0, "t": 1.0}', '{"s": 1, "t": 1.01}', '{"r": 0, "t": 1.002}', '{"r": 0, "t": 1.5}', "",
             '{"stats": {"sent": 2, "cpu_s": 0.1}}']
    log = parse_probe_log(lines)
    assert log.sent == [ProbeSent(0, 1.0), ProbeSent(1, 1.01)]
    assert log.replies == [ProbeReply(0, 1.002), ProbeReply(0, 1.5)]
    assert log.stats == {"sent": 2, "cpu_s": 0.1}


def test_capture_log() -> None:
    lines = ['{"ready": true}', '{"p": 229, "t": 1795644556.681784, "path": "primary", "if": "src-pri"}',
             '{"p": 230, "t": 1795644556.9, "path": "standby", "if": "dst-sby"}']
    assert parse_capture_log(lines) == [PathSeen(229, 1795644556.681784, "primary"),
                                        PathSeen(230, 1795644556.9, "standby")]
