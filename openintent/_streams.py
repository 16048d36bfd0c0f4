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


async def follow_run(store: EventStore | None) -> AsyncIterator[Event]:
    """Every event of one run from the start of its log, live, ending after ``run_finished``.

    A cursor over the log rather than a queue: nothing is copied or buffered per consumer, and
    a consumer that starts late still sees the whole run.
    """
    if store is None:
        return
    events = store.events
    source = store.source
    seq = 0
    wakeup = anyio.Event()

    def poke(_event: Event) -> None:
        wakeup.set()

    listening = False
    try:
        while True:
            while seq < len(events):
                event = public_event(events[seq], seq, source)
                seq += 1
                yield event
                if event.type == EventType.RUN_FINISHED:
                    return
            if not listening:  # only a consumer that waits costs the run anything
                store.watchers.append(poke)
                listening = True
                continue  # events logged before the listener was added
            await wakeup.wait()
            wakeup = anyio.Event()
    finally:
        if listening:
            store.watchers.remove(poke)


def follow_runs(stores: Iterable[EventStore], backend: EventBackend) -> AsyncIterator[Event]:
    """The events of the runs of ``stores`` so far, then live every event ``backend``
    publishes, ending once every run seen starting has finished."""
    send, receive = anyio.create_memory_object_stream[Event](float("inf"))
    for store in stores:
        for seq, raw in enumerate(store.events):
            send.send_nowait(public_event(raw, seq, store.source))
    backend.subscribe(send)
    return _stream(backend, send, receive)


async def _stream(
    backend: EventBackend,
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
        backend.unsubscribe(send)
        send.close()
