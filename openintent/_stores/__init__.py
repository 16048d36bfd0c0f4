"""Where runs' events are kept: the backend seam of the event store.

A backend keeps, for each run, its events in order; nothing is ever changed or removed. It
appends one event or a batch (all or nothing), reads a run's events, lists its runs, and
publishes every event of the runs it was asked to publish to its subscribers (the runtime's
``rt.events()`` streams). It never calls back into a run: the run's own event bus
(:mod:`openintent._bus`) hands events to guardrails and hooks.

Events are ``(type, time, intent_id, data)`` tuples (see :mod:`openintent._store`). Backends:
``memory://`` (:mod:`.memory`, the default), ``sqlite:///path`` (:mod:`.sqlite`, a journal
on a file) and ``postgresql://user@host/db`` (:mod:`.postgres`, a journal in a database several
processes share; it needs the ``postgres`` extra).

A *durable* backend (``durable`` is true) returns logs that are also :class:`Journal` objects:
an appended event is in the log at once, and on disk once ``committed`` counts it. The run
acts on an event (dispatches, fires a hook, streams it, returns its result) only after
``await log.wait_committed(n)``. A log of a backend that is not durable has no such methods,
and nothing waits.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol

import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ..errors import StoreError
from ..models import Event, EventType

__all__ = [
    "CommitFailed",
    "EventBackend",
    "Journal",
    "RawEvent",
    "RunInfo",
    "Subscribers",
    "open_backend",
]

RawEvent = tuple[str, float, str | None, Any]


@attrs.frozen
class RunInfo:
    """One run a store holds, as ``rt.runs()`` lists it.

    ``status`` is how the run ended (``completed``, ``failed``, ``halted``, ``cancelled``) or
    ``running`` while its log has no ``run_finished`` (it is going on, or its process died:
    ``rt.resume`` continues it). ``parent`` is the run whose coordinator ran this one as a
    sub-portfolio (``None`` for a top-level run).
    """

    portfolio_id: str
    name: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    parent: str | None = None


class CommitFailed(StoreError):
    """A commit of a durable log failed: its run cannot go on (nothing acts on an event that
    is not committed). Every later wait on that log raises it again."""


class Journal(Protocol):
    """What a durable backend's log has beyond a sequence of events (see the module
    docstring)."""

    #: How many of the log's events are committed (on disk, or wherever the store keeps them).
    committed: int

    async def wait_committed(self, count: int) -> None:
        """Return once the first ``count`` events are committed (commits are batched: one
        commit takes every event appended so far). A failed commit raises
        :class:`~openintent.errors.StoreError`."""
        ...

    async def serve(self) -> None:
        """Commit whatever is appended, soon after it is, until cancelled (the run runs it in
        a task while it goes on, so events nobody waits for reach the disk too)."""
        ...

    def bind(self, published: Callable[[int, int], None] | None,
             hold: Callable[[], AbstractContextManager[Any]] | None) -> None:
        """The run's event store binds its log: ``published(start, end)`` is called once
        events ``start:end`` are committed (it publishes them to the backend's subscribers);
        ``hold()`` (the clock's, if it has one) is entered while a commit is in flight, so a
        virtual clock does not jump while the writer works."""
        ...


class EventBackend(Protocol):
    """Keeps the events of runs (see the module docstring)."""

    @property
    def subscribers(self) -> list[MemoryObjectSendStream[Event]]:
        """The streams every published event is sent to."""
        ...

    #: Whether its logs are :class:`Journal` objects that commit (``memory://``: no).
    durable: bool

    #: The store URL it was opened with (for messages).
    url: str

    def create_run(
        self, run_id: str, name: str, *, parent: str | None = None, timebase: float = 0.0
    ) -> MutableSequence[RawEvent]:
        """Start the log of a new run and return it: read it like a sequence; only
        ``append`` (one event) and ``extend`` (a batch: all of it or, on an error, none)
        change it. A run id the store already holds raises ``ValueError``.

        ``timebase`` dates the run's events: an event at clock time ``t`` happened at POSIX
        time ``timebase + t`` (UTC)."""
        ...

    def open_run(self, run_id: str) -> MutableSequence[RawEvent]:
        """The log of a run the store holds, to append to (``rt.resume``); its events so far
        are in it. :class:`~openintent.errors.RunNotFoundError` for an unknown id."""
        ...

    def read(self, run_id: str) -> Sequence[RawEvent]:
        """The events of a run, in order (:class:`~openintent.errors.RunNotFoundError`, a
        ``KeyError``, for a run it does not hold)."""
        ...

    def runs(self) -> list[RunInfo]:
        """The runs it holds, oldest first."""
        ...

    def timebase(self, run_id: str) -> float:
        """The ``timebase`` the run was created with (``rt.load`` dates its events by it);
        :class:`~openintent.errors.RunNotFoundError` for a run it does not hold."""
        ...

    def acquire_run(self, run_id: str, holder: str) -> None:
        """Take the run's lease for ``holder`` (a resume holds it while it runs the run);
        :class:`~openintent.errors.RunInUseError` while another live holder has it."""
        ...

    def release_run(self, run_id: str, holder: str) -> None:
        """Give the run's lease back (a holder that does not hold it is ignored)."""
        ...

    def subscribe(self, stream: MemoryObjectSendStream[Event]) -> None:
        """Send every published event to ``stream`` from now on."""
        ...

    def unsubscribe(self, stream: MemoryObjectSendStream[Event]) -> None:
        """Stop sending to ``stream`` (a stream it does not know is ignored)."""
        ...

    def close(self) -> None:
        """Close every subscriber's stream (their iterations end)."""
        ...


class Subscribers:
    """The part of a backend that publishes: the streams every published event is sent to
    (``rt.events()``). Backends inherit it and set ``self.subscribers = []``."""

    subscribers: list[MemoryObjectSendStream[Event]]

    def subscribe(self, stream: MemoryObjectSendStream[Event]) -> None:
        """Send every published event to ``stream`` from now on."""
        self.subscribers.append(stream)

    def unsubscribe(self, stream: MemoryObjectSendStream[Event]) -> None:
        """Stop sending to ``stream`` (a stream it does not know is ignored)."""
        if stream in self.subscribers:
            self.subscribers.remove(stream)

    def close_subscribers(self) -> None:
        """Close every subscriber's stream (their iterations end)."""
        for stream in self.subscribers:
            stream.close()
        self.subscribers.clear()


def sittings(events: Sequence[RawEvent], timebase: float) -> tuple[list[int], list[float]]:
    """Where each sitting of a run's log starts (its ``run_started``, then each
    ``run_resumed``) and the time base of each (``timebase``, the run's own, then each
    ``run_resumed``'s): an event at clock time ``t`` of a sitting happened at POSIX time
    ``base + t``."""
    starts, bases = [0], [timebase]
    for seq, (type_, _time, _intent_id, data) in enumerate(events):
        if type_ == EventType.RUN_RESUMED:
            starts.append(seq)
            bases.append(float((data or {}).get("timebase", bases[-1])))
    return starts, bases


def sitting_base(events: Sequence[RawEvent], timebase: float) -> float:
    """The time base of a log's last sitting: ``timebase`` (the run's own), or the
    ``timebase`` of its last ``run_resumed`` (a resume dates its events by its own clock)."""
    for type_, _time, _intent_id, data in reversed(events):
        if type_ == EventType.RUN_RESUMED:
            return float((data or {}).get("timebase", timebase))
    return timebase


#: The testing kit's crash explorer opens its own (crashing) SQLite backends through this
#: while it is set; nothing else sets it.
opening_backend: ContextVar[Callable[[str], EventBackend] | None] = ContextVar(
    "openintent_opening_backend", default=None)


def open_backend(url: str) -> EventBackend:
    """The backend for a ``Runtime(store=...)`` URL: ``memory://``, ``sqlite:///path.db``
    (relative) / ``sqlite:////abs/path.db``, optionally with ``?synchronous=full``, or
    ``postgresql://user@host/db`` (``postgres://`` too)."""
    opening = opening_backend.get()
    if opening is not None:
        return opening(url)
    if url == "memory://":
        from .memory import MemoryBackend, shared_runs

        return MemoryBackend(url, shared_runs())
    if isinstance(url, str) and url.startswith("sqlite:"):
        from .sqlite import SqliteBackend

        return SqliteBackend(url)
    if isinstance(url, str) and url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:
            raise StoreError(
                f"store {url!r} needs psycopg 3 and psycopg_pool, which are not installed "
                f"({exc}); pip install 'openintent[postgres]'") from exc
        return PostgresBackend(url)
    raise StoreError(
        f"store {url!r} is not supported; use 'memory://' (the default), "
        "'sqlite:///path/to/runs.db' or 'postgresql://user@host/dbname'"
    )
