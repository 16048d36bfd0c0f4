"""The run's event bus: every event of a run is appended to its store through here, then
handed, in log order, to the run's observers (its guardrails, its ``@on_event`` hooks, a
parent run's cost roll-up).

The store only appends (and tells watchers that merely watch); whatever reacts to an event
(a budget guardrail that halts the run, say) hears it from the bus, which belongs to the run,
and asks the scheduler through its port. An observer may emit in turn: events are queued, so
every observer hears every event in log order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ._store import EventStore
from .models import Event, public_event

__all__ = ["EventBus"]


class EventBus:
    """Appends a run's events to its store and hands each to the run's observers."""

    __slots__ = ("store", "emit", "_observers", "_untold", "_telling")

    def __init__(self, store: EventStore) -> None:
        self.store = store
        #: Append an event (``type``, ``intent_id``, ``data``) and tell the observers. With
        #: no observer, it is the store's own ``append``: nothing to tell costs nothing.
        self.emit: Callable[..., None] = store.append
        self._observers: list[Callable[[Event], None]] = []
        self._untold: deque[Event] = deque()
        self._telling = False

    def observe(self, observer: Callable[[Event], None], *, from_start: bool = False) -> None:
        """Hand every event appended from now on to ``observer``; with ``from_start``, first
        hand it every event logged so far (in a resumed run: since its ``run_resumed``)."""
        if from_start:
            store = self.store
            events = store.events
            for seq in range(store.source.since, len(events)):
                observer(public_event(events[seq], seq, store.source))
        self._observers.append(observer)
        self.emit = self._emit_and_tell

    def _emit_and_tell(self, type: str, intent_id: str | None = None, data: Any = None) -> None:
        store = self.store
        store.append(type, intent_id, data)
        events = store.events
        self._untold.append(public_event(events[-1], len(events) - 1, store.source))
        if self._telling:
            return  # an observer emitted: it is told after the event being told now
        self._telling = True
        try:
            while self._untold:
                event = self._untold.popleft()
                for observer in self._observers:
                    observer(event)
        finally:
            self._telling = False
