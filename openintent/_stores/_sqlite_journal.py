"""A run's log in a SQLite journal: a list that is also a :class:`~openintent._stores.Journal`,
and the rows its events become in the file (and back).

Appending is appending to a list (the run's hot path costs what it costs in memory). A run
that wants its events on disk awaits :meth:`JournalLog.wait_committed`: the first waiter
becomes the *flusher*, takes every event appended and not yet written and writes them in one
transaction on the backend's writer thread; every task that waits meanwhile waits for that
flush, or for the next one, which takes everything appended while the first ran (group
commit). The event loop never waits for the disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import anyio

from ..models import PACKED_FIELDS
from . import CommitFailed, sitting_base

__all__ = ["JournalLog", "decode_batches", "encode_events"]

RawEvent = tuple[str, float, str | None, Any]

# Compact JSON; data is already checked JSON data (finite numbers, str keys).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                           check_circular=False).encode
_decode = json.JSONDecoder().decode
_PACKED = frozenset(PACKED_FIELDS)


class Writer(Protocol):
    """What a log needs of its backend to commit."""

    async def commit(self, log: JournalLog, start: int, events: list[RawEvent]) -> None:
        """Write ``events`` (the log's from ``start`` on) in one transaction."""
        ...


class JournalLog(list[RawEvent]):
    """One run's events (see the module docstring)."""

    __slots__ = ("__weakref__", "run_id", "name", "parent", "timebase", "sitting", "committed",
                 "error",
                 "_writer", "_flushing", "_published", "_hold", "_wakeup")

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
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def extend(self, events: Iterable[RawEvent]) -> None:
        """Append a batch of events (all of them: a list cannot take part of one)."""
        list.extend(self, events)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    async def serve(self) -> None:
        """Commit what is appended, soon after it is (the run runs this in a task while it
        goes on): events nobody waits for yet (an approval request, a long handler's state
        patches) reach the disk too. Everything appended while one commit runs goes in the
        next. Returns only by cancellation, or with :class:`CommitFailed`."""
        while True:
            if self.committed < len(self):
                await self.wait_committed(len(self))
            else:
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
        :class:`CommitFailed` when a commit failed."""
        count = min(count, len(self))  # nothing to wait for beyond what was appended
        while self.committed < count:
            if self.error is not None:
                raise self.error
            flushing = self._flushing
            if flushing is not None:
                await flushing.wait()
                continue
            await self._flush()

    async def _flush(self) -> None:
        start, end = self.committed, len(self)
        done = self._flushing = anyio.Event()
        try:
            hold = self._hold
            with hold() if hold is not None else nullcontext():
                await self._writer.commit(self, start, self[start:end])
        except CommitFailed as exc:
            self.error = exc
            raise
        except Exception as exc:
            self.error = CommitFailed(f"the journal could not commit events {start}-{end - 1} "
                                      f"of run {self.run_id} ({self.name!r}): {exc!r}")
            raise self.error from exc
        else:
            self.committed = end
        finally:
            self._flushing = None
            done.set()
        if self._published is not None:
            self._published(start, end)


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
