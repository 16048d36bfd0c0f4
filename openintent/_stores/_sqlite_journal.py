"""A run's log in a SQLite journal: a list that is also a :class:`~openintent._stores.Journal`,
and the rows its events become in the file (and back).

Appending is appending to a list (the run's hot path costs what it costs in memory). A run
that wants its events on disk awaits :meth:`JournalLog.wait_committed`: the first waiter
starts a *flush*: every event appended and not yet written goes in one transaction on the
backend's writer thread, which wakes the event loop when it is done; every task that waits
meanwhile waits for that flush, or for the next one, which takes everything appended while
the first ran (group commit). The event loop never waits for the disk, and a waiter that is
cancelled neither stops nor repeats the commit it waited for.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import anyio

from ..models import PACKED_FIELDS
from . import CommitFailed, sitting_base

__all__ = ["JournalLog", "decode_batches", "encode_events"]

RawEvent = tuple[str, float, str | None, Any]

# Compact JSON; data is already checked JSON data (finite numbers, str keys).
_encode: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                                 check_circular=False).encode
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode_str = getattr(json.encoder, "c_encode_basestring", None)
if _make_c_encoder is not None and _c_encode_str is not None:
    # The same encoder, made once: JSONEncoder.encode builds its C encoder on every call,
    # which costs more than encoding a small commit (a chain commits ~3 events at a time).
    def _not_json(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON data")

    _chunks = _make_c_encoder(None, _not_json, _c_encode_str, None, ":", ",", False, False,
                              True)

    def _encode(value: Any) -> str:
        return "".join(_chunks(value, 0))
_decode = json.JSONDecoder().decode
_PACKED = frozenset(PACKED_FIELDS)


class Writer(Protocol):
    """What a log needs of its backend to commit."""

    def submit(self, log: JournalLog, start: int, events: list[RawEvent],
               done: Callable[[BaseException | None], None]) -> None:
        """Write ``events`` (the log's from ``start`` on) in one transaction off the event
        loop's thread, then call ``done(error)`` (``None``: committed) on the event loop."""
        ...


class JournalLog(list[RawEvent]):
    """One run's events (see the module docstring)."""

    __slots__ = ("__weakref__", "run_id", "name", "parent", "timebase", "sitting", "committed",
                 "error",
                 "written", "_writer", "_flushing", "_published", "_hold", "_wakeup")

    def __init__(self, run_id: str, name: str, parent: str | None, timebase: float,
                 writer: Writer, events: Iterable[RawEvent] = ()) -> None:
        super().__init__(events)
        self.run_id = run_id
        self.name = name
        self.parent = parent
        self.timebase = timebase
        #: The time base of the latest sitting: a resumed run's events after its last
        #: ``run_resumed`` are dated by that event's own ``timebase`` (another process's clock).
        self.sitting = sitting_base(self, timebase)
        #: How many of the events are on disk.
        self.committed = len(self)
        #: How many are on disk as the writer thread knows it (``committed`` follows once the
        #: event loop hears of the commit).
        self.written = len(self)
        #: The failure that broke this log (then every wait raises it).
        self.error: CommitFailed | None = None
        self._writer = writer
        self._flushing: anyio.Event | None = None
        self._published: Callable[[int, int], None] | None = None
        self._hold: Callable[[], AbstractContextManager[Any]] | None = None
        self._wakeup: anyio.Event | None = None  # serve() waits for an append

    def append(self, event: RawEvent) -> None:
        """Append one event (it is committed by the next flush)."""
        list.append(self, event)
        wakeup = self._wakeup
        if wakeup is not None and self._flushing is None:  # (else: once that flush is done)
            self._wakeup = None
            wakeup.set()

    def extend(self, events: Iterable[RawEvent]) -> None:
        """Append a batch of events (all of them: a list cannot take part of one)."""
        list.extend(self, events)
        wakeup = self._wakeup
        if wakeup is not None and self._flushing is None:  # (else: once that flush is done)
            self._wakeup = None
            wakeup.set()

    async def serve(self) -> None:
        """Commit what is appended, soon after it is (the run runs this in a task while it
        goes on): events nobody waits for yet (an approval request, a long handler's state
        patches) reach the disk too. Everything appended while one commit runs goes in the
        next. Returns only by cancellation, or with :class:`CommitFailed`."""
        while True:
            if self.committed < len(self) and self._flushing is None:
                await self.wait_committed(len(self))
            else:  # all committed, or a flush is in flight: woken once it is done
                wakeup = self._wakeup = anyio.Event()
                await wakeup.wait()

    def bind(self, published: Callable[[int, int], None] | None,
             hold: Callable[[], AbstractContextManager[Any]] | None) -> None:
        """``published(start, end)`` is called once events ``start:end`` are committed;
        ``hold()`` is entered while a commit is in flight (a virtual clock's, so time does
        not jump while the writer thread works)."""
        self._published = published
        self._hold = hold

    async def wait_committed(self, count: int) -> None:
        """Return once the first ``count`` events are committed (see the module docstring);
        :class:`CommitFailed` when a commit failed. A cancelled waiter only stops waiting:
        the commit it started or waited for goes on and completes."""
        count = min(count, len(self))  # nothing to wait for beyond what was appended
        while self.committed < count:
            if self.error is not None:
                raise self.error
            flushing = self._flushing
            if flushing is None:
                flushing = self._flush()
            await flushing.wait()

    def _flush(self) -> anyio.Event:
        """Hand every event not committed yet to the writer; the event returned is set once
        that commit is done (or failed)."""
        start, end = self.committed, len(self)
        done = self._flushing = anyio.Event()
        hold = self._hold
        held = hold() if hold is not None else None
        if held is not None:  # no jump of a virtual clock while the writer works
            held.__enter__()

        def finished(exc: BaseException | None) -> None:  # on the event loop's thread
            try:
                self._flushing = None
                if held is not None:
                    held.__exit__(None, None, None)
                if exc is None:
                    self.committed = max(self.committed, end)
                    if self._published is not None:
                        self._published(start, end)
                elif self.error is None:
                    if isinstance(exc, CommitFailed):
                        self.error = exc
                    else:
                        self.error = CommitFailed(
                            f"the journal could not commit events {start}-{end - 1} of run "
                            f"{self.run_id} ({self.name!r}): {exc!r}")
                        self.error.__cause__ = exc
            finally:
                done.set()
                wakeup = self._wakeup
                if wakeup is not None and (exc is not None or self.committed < len(self)):
                    self._wakeup = None  # serve(): commit what came meanwhile, or fail
                    wakeup.set()

        try:
            self._writer.submit(self, start, self[start:end], finished)
        except Exception as exc:  # not even handed over (the store was closed, say)
            finished(exc)
        return done


def encode_events(events: list[RawEvent]) -> str:
    """The ``events`` column of one commit's row: a JSON array of ``[type, time, intent_id,
    data]`` (packed tuples as arrays)."""
    return _encode(events)


def decode_batches(rows: Iterable[tuple[str]]) -> list[RawEvent]:
    """Events as the live log holds them, from batch rows in order: packed data (see
    ``models.PACKED_FIELDS``) as tuples, other data as plain dicts and lists."""
    decode = _decode
    packed = _PACKED
    events: list[RawEvent] = []
    append = events.append
    for (text,) in rows:
        for type_, time, intent_id, data in decode(text):
            if data is not None and type_ in packed:
                data = tuple(data)
            append((type_, time, intent_id, data))
    return events
