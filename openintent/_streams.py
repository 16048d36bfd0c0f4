"""Event streams: one run's log followed live (``handle.events()``), and the runtime's
stream of its runs (``rt.events()``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._store import EventStore
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

            store.listeners.append(poke)
            try:
                await wakeup.wait()
            finally:
                store.listeners.remove(poke)
        event = public_event(events[self._seq], self._seq, store.source)
        self._seq += 1
        if event.type == EventType.RUN_FINISHED:
            self._done = True
        return event

    async def aclose(self) -> None:
        """Stop following (what ``contextlib.aclosing`` calls); nothing to release."""
        self._done = True


def follow_runs(
    stores: Iterable[EventStore],
    subscribers: list[MemoryObjectSendStream[Event]],
) -> AsyncIterator[Event]:
    """The events of the runs of ``stores`` so far, then live every event sent to
    ``subscribers``, ending once every run seen starting has finished."""
    send, receive = anyio.create_memory_object_stream[Event](float("inf"))
    for store in stores:
        for seq, raw in enumerate(store.events):
            send.send_nowait(public_event(raw, seq, store.source))
    subscribers.append(send)
    return _stream(subscribers, send, receive)


async def _stream(
    subscribers: list[MemoryObjectSendStream[Event]],
    send: MemoryObjectSendStream[Event],
    receive: MemoryObjectReceiveStream[Event],
) -> AsyncIterator[Event]:
    running: set[str] = set()
    try:
        async with receive:
            async for event in receive:
                yield event
                if event.type == EventType.RUN_STARTED:
                    running.add(event.portfolio_id)
                elif event.type == EventType.RUN_FINISHED:
                    running.discard(event.portfolio_id)
                    if not running:
                        return
    finally:
        if send in subscribers:
            subscribers.remove(send)
        send.close()
