"""Where runs' events are kept: the backend seam of the event store.

A backend keeps, for each run, its events in order; nothing is ever changed or removed. It
appends one event or a batch (all or nothing), reads a run's events, lists its runs, and
publishes every event of the runs it was asked to publish to its subscribers (the runtime's
``rt.events()`` streams). It never calls back into a run: the run's own event bus
(:mod:`openintent._bus`) hands events to guardrails and hooks.

Events are ``(type, time, intent_id, data)`` tuples (see :mod:`openintent._store`). Backends:
``memory://`` (:mod:`.memory`, the default); ``sqlite:///`` and ``postgresql://`` will follow.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any, Protocol

from anyio.streams.memory import MemoryObjectSendStream

from ..errors import OpenIntentError
from ..models import Event

__all__ = ["EventBackend", "RawEvent", "open_backend"]

RawEvent = tuple[str, float, str | None, Any]


class EventBackend(Protocol):
    """Keeps the events of runs (see the module docstring)."""

    @property
    def subscribers(self) -> list[MemoryObjectSendStream[Event]]:
        """The streams every published event is sent to."""
        ...

    def create_run(self, run_id: str, name: str) -> MutableSequence[RawEvent]:
        """Start the log of a new run and return it: read it like a sequence; only
        ``append`` (one event) and ``extend`` (a batch: all of it or, on an error, none)
        change it."""
        ...

    def read(self, run_id: str) -> Sequence[RawEvent]:
        """The events of a run, in order (``KeyError`` for a run it does not hold)."""
        ...

    def runs(self) -> list[str]:
        """The ids of the runs it holds, oldest first."""
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


def open_backend(url: str) -> EventBackend:
    """The backend for a ``Runtime(store=...)`` URL."""
    if url != "memory://":
        raise OpenIntentError(
            f"store {url!r} is not supported yet; only 'memory://' (the default) is"
        )
    from .memory import MemoryBackend

    return MemoryBackend()
