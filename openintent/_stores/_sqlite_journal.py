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

from ..errors import StoreError
from ..models import PACKED_FIELDS

__all__ = ["CommitFailed", "JournalLog", "decode_rows", "encode_rows"]

RawEvent = tuple[str, float, str | None, Any]
Row = tuple[str, int, str, float, str | None, str | None]

# Compact JSON; data is already checked JSON data (finite numbers, str keys).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                           check_circular=False).encode
_decode = json.JSONDecoder().decode
_PACKED = frozenset(PACKED_FIELDS)


class CommitFailed(StoreError):
    """A commit of the journal failed: the run cannot go on (nothing acts on an event that is
    not on disk). Every later wait on that log raises it again."""


class Writer(Protocol):
    """What a log needs of its backend to commit."""

    async def commit(self, log: JournalLog, start: int, events: list[RawEvent]) -> None:
        """Write ``events`` (the log's from ``start`` on) in one transaction."""
        ...


class JournalLog(list[RawEvent]):
    """One run's events (see the module docstring)."""

    __slots__ = ("__weakref__", "run_id", "name", "parent", "timebase", "committed", "error",
                 "_writer", "_flushing", "_published", "_hold")

    def __init__(self, run_id: str, name: str, parent: str | None, timebase: float,
                 writer: Writer, events: Iterable[RawEvent] = ()) -> None:
        super().__init__(events)
        self.run_id = run_id
        self.name = name
        self.parent = parent
        self.timebase = timebase
        #: How many of the events are on disk.
        self.committed = len(self)
        #: The failure that broke this log (then every wait raises it).
        self.error: CommitFailed | None = None
        self._writer = writer
        self._flushing: anyio.Event | None = None
        self._published: Callable[[int, int], None] | None = None
        self._hold: Callable[[], AbstractContextManager[Any]] | None = None

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


def encode_rows(run_id: str, start: int, events: list[RawEvent]) -> list[Row]:
    """The ``events`` table rows of ``events`` (the log's from ``start`` on): data as JSON,
    packed tuples as JSON lists."""
    encode = _encode
    return [
        (run_id, seq, type_, time, intent_id, None if data is None else encode(data))
        for seq, (type_, time, intent_id, data) in enumerate(events, start)
    ]


def decode_rows(rows: Iterable[tuple[str, float, str | None, str | None]]) -> list[RawEvent]:
    """Events as the live log holds them, from ``(type, time, intent_id, data)`` rows: packed
    data (see ``models.PACKED_FIELDS``) as tuples, other data as plain dicts and lists."""
    decode = _decode
    packed = _PACKED
    events: list[RawEvent] = []
    append = events.append
    for type_, time, intent_id, text in rows:
        if text is None:
            append((type_, time, intent_id, None))
        elif type_ in packed:
            append((type_, time, intent_id, tuple(decode(text))))
        else:
            append((type_, time, intent_id, decode(text)))
    return events
