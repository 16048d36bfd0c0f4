"""Event streams: one run's log followed live (``handle.events()``), and the runtime's
stream of its runs (``rt.events()``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._store import EventStore
from ._stores import EventBackend
from .models import Event, EventType, public_event

__all__ = ["follow_run", "follow_runs"]


def follow_run(store: EventStore | None) -> AsyncIterator[Event]:
    """Every event of one run from the start of its log, live, ending after ``run_finished``.

    A cursor over the log rather than a queue: nothing is copied or buffered per consumer, and
    a consumer that starts late still sees the whole run.
    """
    return _RunFollower(store)


class _RunFollower:
    """The iterator of :func:`follow_run`: a plain object, not an async generator, so a
    consumer may ``break`` out without closing it (trio warns about async generators dropped
    unfinished). It listens to the store only while a ``__anext__`` waits."""

    __slots__ = ("_store", "_seq", "_done")

    def __init__(self, store: EventStore | None) -> None:
        self._store = store
        self._seq = 0
        self._done = store is None

    def __aiter__(self) -> _RunFollower:
        return self

    async def __anext__(self) -> Event:
        store = self._store
        if self._done or store is None:
            raise StopAsyncIteration
        events = store.events
        while self._seq >= len(events):
            wakeup = anyio.Event()

            def poke(_event: Event, wakeup: anyio.Event = wakeup) -> None:
                wakeup.set()

            store.watchers.append(poke)
            try:
                await wakeup.wait()
            finally:
                store.watchers.remove(poke)
        if store.journal is not None:  # a durable store: only committed events are seen
            await store.journal.wait_committed(self._seq + 1)
        event = public_event(events[self._seq], self._seq, store.source)
        self._seq += 1
        # A resumed run's log may hold the end of an earlier stretch: only its last one ends.
        if event.type == EventType.RUN_FINISHED and event.seq >= store.source.since:
            self._done = True
        return event

    async def aclose(self) -> None:
        """Stop following (what ``contextlib.aclosing`` calls); nothing to release."""
        self._done = True


def follow_runs(stores: Iterable[EventStore], backend: EventBackend) -> AsyncIterator[Event]:
    """The events of the runs of ``stores`` so far, then live every event ``backend``
    publishes, ending once every run seen starting (or resuming) has finished. A resumed
    run's events so far are those since its ``run_resumed``."""
    send, receive = anyio.create_memory_object_stream[Event](float("inf"))
    for store in stores:
        events = store.events
        # A durable log publishes events as they are committed: replay those committed so far.
        until = len(events) if store.journal is None else store.journal.committed
        for seq in range(store.source.since, until):
            send.send_nowait(public_event(events[seq], seq, store.source))
    backend.subscribe(send)
    return _RunsFollower(backend, send, receive)


class _RunsFollower:
    """The iterator of :func:`follow_runs`: a plain object, so a consumer may ``break`` out
    without closing it; it unsubscribes once it ends, is closed, or is dropped."""

    __slots__ = ("_backend", "_send", "_receive", "_running", "_done")

    def __init__(
        self,
        backend: EventBackend,
        send: MemoryObjectSendStream[Event],
        receive: MemoryObjectReceiveStream[Event],
    ) -> None:
        self._backend = backend
        self._send = send
        self._receive = receive
        self._running: set[str] = set()
        self._done = False

    def __aiter__(self) -> _RunsFollower:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        try:
            event = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):  # the runtime closed
            self._close()
            raise StopAsyncIteration from None
        if event.type in (EventType.RUN_STARTED, EventType.RUN_RESUMED):
            self._running.add(event.portfolio_id)
        elif event.type == EventType.RUN_FINISHED:
            self._running.discard(event.portfolio_id)
            if not self._running:
                self._close()
        return event

    def _close(self) -> None:
        self._done = True
        self._backend.unsubscribe(self._send)
        self._send.close()
        self._receive.close()

    async def aclose(self) -> None:
        """Stop following (what ``contextlib.aclosing`` calls)."""
        self._close()

    def __del__(self) -> None:
        self._close()
