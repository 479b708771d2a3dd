"""Progress lines: plain for CI and pytest, live (one rewritten line) for a terminal."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest

from harness import progress


@pytest.fixture
def lines() -> Iterator[list[str]]:
    out: list[str] = []
    progress.set_sink(progress.PlainSink(out.append))
    yield out
    progress.set_sink(None)


def test_plain_lines_say_start_outcome_and_duration(lines: list[str]) -> None:
    with progress.step("booting the guest"):
        pass
    with progress.step("migrating src to dst") as step:
        step.result = "cancelled"
    with pytest.raises(RuntimeError), progress.step("building the image"):
        raise RuntimeError("apt failed")
    assert lines[0] == "booting the guest ..."
    assert re.fullmatch(r"booting the guest: done in \d+\.\d s", lines[1])
    assert re.fullmatch(r"migrating src to dst: cancelled in \d+\.\d s", lines[3])
    assert re.fullmatch(r"building the image: FAILED in \d+\.\d s", lines[5])


def test_no_sink_no_output(capsys: pytest.CaptureFixture[str]) -> None:
    progress.set_sink(None)
    with progress.step("quiet") as step:
        step.result = "finished"
    assert capsys.readouterr() == ("", "")


def test_live_sink_rewrites_one_line() -> None:
    stream = io.StringIO()
    progress.set_sink(progress.LiveSink(stream))
    try:
        with progress.step("booting"):
            pass
    finally:
        progress.set_sink(None)
    assert stream.getvalue().startswith("booting ...")
    assert re.search(r"\r\x1b\[Kbooting: done in \d+\.\d s\n$", stream.getvalue())


def test_sink_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CI", raising=False)
    assert isinstance(progress.sink_for(Tty()), progress.LiveSink)
    assert isinstance(progress.sink_for(io.StringIO()), progress.PlainSink)
    monkeypatch.setenv("CI", "true")
    assert isinstance(progress.sink_for(Tty()), progress.PlainSink)
