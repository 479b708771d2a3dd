"""One QMP session per VM, on the QEMU project's ``qemu.qmp`` client.

The client is asyncio; the harness's tests are synchronous and often block
(waiting on a probe subprocess, a guest command). So all sessions share one
private event loop in a daemon thread, and a recorder task per session stores
every event, with QEMU's own timestamp, the moment it arrives: nothing is lost
while the test thread is busy. Every command, reply and event also goes to a
JSON-lines transcript kept with the test's artifacts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError, Runstate

from harness.errors import DeadlineExceeded, HarnessError, VMError
from harness.timeline import QMPEvent

log = logging.getLogger(__name__)
T = TypeVar("T")


class QMPCommandError(HarnessError):
    """QEMU answered a command with an error; keeps QEMU's class and description."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"{command}: {error_class}: {desc}")


class _LoopThread:
    """The process-wide asyncio loop that runs every QMP client."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="qmp-loop", daemon=True).start()
                cls._loop = loop
            return cls._loop


def _submit(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    fut = asyncio.run_coroutine_threadsafe(coro, _LoopThread.loop())
    try:
        return fut.result(timeout)
    except TimeoutError:
        fut.cancel()
        raise


class QMPSession:
    """QMP of one VM: the harness listens on *socket_path*, QEMU connects to it.

    Listening first (as ``python/qemu/machine`` does) means there is no race
    between QEMU creating its socket and the harness polling for it.
    """

    def __init__(self, vm_name: str, socket_path: Path, transcript_path: Path, clock_offset_s: float = 0.0) -> None:
        self.vm_name = vm_name
        self.socket_path = socket_path
        # QEMU's clock minus the harness's: a QEMU inside an L1 VM stamps events with L1's clock.
        self.clock_offset_s = clock_offset_s
        self._client = QMPClient(vm_name)
        self._listener = EventListener()
        self._client.register_listener(self._listener)
        self._events: list[QMPEvent] = []
        self._cond = threading.Condition()
        self._transcript = transcript_path.open("a", encoding="utf-8")
        self._recorder: concurrent.futures.Future[None] | None = None
        self._closed = False
        self._exit_status: Callable[[], str | None] = lambda: None  # set by accept()

    # -- connection -------------------------------------------------------

    def listen(self) -> None:
        _submit(self._client.start_server(str(self.socket_path)), timeout=10)

    def accept(self, timeout: float, exit_status: Callable[[], str | None]) -> None:
        """Wait for QEMU to connect; fail early if the QEMU process dies meanwhile.

        *exit_status* is None while QEMU runs, else how it ended: a command that
        fails because QEMU died then says so ("killed by SIGSEGV").
        """
        self._exit_status = exit_status
        fut = asyncio.run_coroutine_threadsafe(self._client.accept(), _LoopThread.loop())
        deadline = time.monotonic() + timeout
        while True:
            try:
                fut.result(0.1)
                break
            except QMPError as e:  # QEMU connected, then exited (e.g. a -device it refused)
                raise VMError(f"{self.vm_name}: QMP handshake failed ({e}): QEMU exited?") from None
            except TimeoutError:
                if exit_status() is not None:
                    self._give_up(fut)
                    raise VMError(f"{self.vm_name}: QEMU exited before connecting to QMP") from None
                if time.monotonic() > deadline:
                    self._give_up(fut)
                    raise VMError(f"{self.vm_name}: QEMU did not connect to QMP within {timeout:.0f} s") from None
        self._recorder = asyncio.run_coroutine_threadsafe(self._record(), _LoopThread.loop())
        self._write({"greeting": self.qemu_version()})

    def _give_up(self, accepting: concurrent.futures.Future[None], timeout: float = 5.0) -> None:
        """Cancel a pending accept() and wait until the client has unwound it (back to IDLE), so that
        close() does not race the accept's own disconnect."""
        accepting.cancel()  # the loop thread cancels the task; its cleanup runs there, later
        deadline = time.monotonic() + timeout
        while self._client.runstate != Runstate.IDLE and time.monotonic() < deadline:
            time.sleep(0.01)

    def _ended(self, grace_s: float = 1.0) -> str | None:
        """How QEMU ended, if it did (waiting *grace_s*: the socket closes a moment before the process exits)."""
        deadline = time.monotonic() + grace_s
        while True:
            ended = self._exit_status()
            if ended is not None or time.monotonic() >= deadline:
                return ended
            time.sleep(0.05)

    def qemu_version(self) -> dict[str, int]:
        greeting = self._client.greeting
        assert greeting is not None
        # The QMP spec: {"major": int, "minor": int, "micro": int}; qemu.qmp checks only the outer mapping.
        return dict(cast(Mapping[str, int], greeting.QMP.version["qemu"]))

    async def _record(self) -> None:
        async for msg in self._listener:
            # The QMP spec's event: {"event": str, "data": object, "timestamp": {"seconds", "microseconds"}}.
            ts = cast(Mapping[str, int], msg["timestamp"])
            event = QMPEvent(
                vm=self.vm_name,
                name=str(msg["event"]),
                data=dict(cast(Mapping[str, Any], msg.get("data", {}))),
                ts=ts["seconds"] + ts["microseconds"] / 1e6 - self.clock_offset_s,
            )
            self._write({"event": event.name, "data": event.data, "ts": event.ts}
                        | ({"qemu_ts": event.ts + self.clock_offset_s} if self.clock_offset_s else {}))
            with self._cond:
                self._events.append(event)
                self._cond.notify_all()

    def _write(self, record: dict[str, Any]) -> None:
        if not self._transcript.closed:
            record = {"host_time": time.time(), **record}
            self._transcript.write(json.dumps(record, default=str) + "\n")
            self._transcript.flush()

    # -- commands ---------------------------------------------------------

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        """Run a QMP command; return its ``return`` value or raise :class:`QMPCommandError`."""
        self._write({"execute": command, "arguments": arguments or {}})
        try:
            result = _submit(self._client.execute(command, arguments), timeout)
        except ExecuteError as e:
            err = e.error.error
            self._write({"error": {"class": err.class_, "desc": err.desc}, "command": command})
            raise QMPCommandError(command, err.class_, err.desc) from None
        except (QMPError, TimeoutError, OSError, EOFError) as e:
            self._write({"failure": repr(e), "command": command})
            ended = self._ended()
            if ended is not None:
                raise VMError(f"{self.vm_name}: QEMU {ended} (QMP {command} had no answer)") from e
            raise VMError(f"{self.vm_name}: QMP {command} failed: {e!r}") from e
        self._write({"return": result, "command": command})
        return result

    def qom_children(self, path: str) -> set[str]:
        """Names of the QOM children of *path* (``/machine/peripheral``: devices that exist)."""
        return {entry["name"] for entry in self.execute("qom-list", {"path": path})
                if str(entry.get("type", "")).startswith("child<")}

    # -- events -----------------------------------------------------------

    @property
    def events(self) -> list[QMPEvent]:
        """A copy of every event recorded so far, in arrival order."""
        with self._cond:
            return list(self._events)

    def mark(self) -> int:
        """Position to pass to :meth:`next_event` so that only later events count."""
        with self._cond:
            return len(self._events)

    def next_event(
        self,
        name: str,
        timeout: float,
        *,
        after: int = 0,
        match: Callable[[QMPEvent], bool] = lambda e: True,
    ) -> tuple[int, QMPEvent]:
        """Wait for an event *name* matching *match*, recorded at or after index *after*.

        Returns the event and its index: pass ``index + 1`` as *after* to wait for the next one.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(after, len(self._events)):
                    event = self._events[index]
                    if event.name == name and match(event):
                        return index, event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeadlineExceeded(f"{self.vm_name}: no {name} event within {timeout:.1f} s")
                self._cond.wait(left)

    # -- teardown ---------------------------------------------------------

    def close(self) -> None:
        """Disconnect (idempotent). QEMU may already be gone: that is not an error here."""
        if self._closed:
            return
        self._closed = True
        try:
            # An accept() given up on has reset the client already: a second disconnect would race
            # its cleanup (qemu.qmp asserts DISCONNECTING; CI saw it when QEMU refused its -device).
            if self._client.runstate != Runstate.IDLE:
                _submit(self._client.disconnect(), timeout=5)
        except (QMPError, TimeoutError, OSError, EOFError) as e:
            log.debug("%s: QMP disconnect: %r", self.vm_name, e)
        if self._recorder is not None:
            self._recorder.cancel()
        self._transcript.close()
