"""Progress of long steps (image build, guest boots, migrations) for whoever is watching.

Library code says ``with progress.step("booting source guest"):``; where the
words go is the front end's choice, made once with :func:`set_sink`:

- :class:`LiveSink` on a terminal: one line that counts seconds, then ends with the outcome;
- :class:`PlainSink` under CI or in a log: a line when a step starts and one when it ends;
- nothing (the default): the step is only logged at DEBUG.

The pytest plugin installs a plain sink writing through pytest's terminal with
``--progress``; the ``failover-harness`` command installs a live or plain one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO

log = logging.getLogger(__name__)


@dataclass
class Step:
    """A running step; set :attr:`result` to say more than "done" (e.g. a migration's status)."""

    what: str
    result: str | None = None


class Sink(Protocol):
    def started(self, what: str) -> None: ...

    def finished(self, what: str, seconds: float, outcome: str) -> None: ...


def _outcome(what: str, seconds: float, outcome: str) -> str:
    return f"{what}: {outcome} in {seconds:.1f} s"


class PlainSink:
    """Whole lines only: safe for CI logs and for pytest's terminal."""

    def __init__(self, write_line: Callable[[str], None]) -> None:
        self.write_line = write_line

    def started(self, what: str) -> None:
        self.write_line(f"{what} ...")

    def finished(self, what: str, seconds: float, outcome: str) -> None:
        self.write_line(_outcome(what, seconds, outcome))


class LiveSink:
    """One rewritten line per step with a seconds counter (an interactive terminal only)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def started(self, what: str) -> None:
        started = time.monotonic()
        self._stop.clear()

        def tick() -> None:
            while not self._stop.wait(0.5):
                self.stream.write(f"\r{what} ... {time.monotonic() - started:.0f} s")
                self.stream.flush()

        self.stream.write(f"{what} ...")
        self.stream.flush()
        self._ticker = threading.Thread(target=tick, daemon=True)
        self._ticker.start()

    def finished(self, what: str, seconds: float, outcome: str) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.stream.write(f"\r\033[K{_outcome(what, seconds, outcome)}\n")
        self.stream.flush()


def sink_for(stream: TextIO) -> Sink:
    """Live on an interactive terminal, plain lines under CI (``CI`` set) or when redirected."""
    if stream.isatty() and not os.environ.get("CI"):
        return LiveSink(stream)
    return PlainSink(lambda line: print(line, file=stream, flush=True))


_sink: Sink | None = None


def set_sink(sink: Sink | None) -> None:
    global _sink
    _sink = sink


@contextmanager
def step(what: str) -> Iterator[Step]:
    """Report a long step's start and end: its duration and "done", its result, or "FAILED" if it raised."""
    sink = _sink
    current = Step(what)
    started = time.monotonic()
    log.debug("%s ...", what)
    if sink is not None:
        sink.started(what)
    outcome = "FAILED"
    try:
        yield current
        outcome = current.result or "done"
    finally:
        seconds = time.monotonic() - started
        log.debug(_outcome(what, seconds, outcome))
        if sink is not None:
            sink.finished(what, seconds, outcome)
