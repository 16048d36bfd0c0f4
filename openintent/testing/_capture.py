"""Capture the events of every run started inside a block (like structlog's capture_logs)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import overload

from .._store import event_captures
from ..models import Decision, Event, EventType

__all__ = ["DecisionView", "capture_events"]


@contextmanager
def capture_events() -> Iterator[list[Event]]:
    """Collect the events of every run started inside the block, in order.

    >>> with capture_events() as events:
    ...     result = await rt.run(spec)
    >>> [event.type for event in events][:2]
    ['run_started', 'created']
    """
    captured: list[Event] = []
    token = event_captures.set((*event_captures.get(), captured))
    try:
        yield captured
    finally:
        event_captures.reset(token)


class DecisionView(Sequence[Decision]):
    """The decision records among captured events, always up to date."""

    def __init__(self, events: list[Event]) -> None:
        self._events = events

    def _decisions(self) -> list[Decision]:
        return [Decision.from_event(event) for event in self._events
                if event.type == EventType.DECISION]

    @overload
    def __getitem__(self, index: int) -> Decision: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Decision]: ...
    def __getitem__(self, index: int | slice) -> Decision | Sequence[Decision]:
        return self._decisions()[index]

    def __len__(self) -> int:
        return len(self._decisions())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._decisions() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"DecisionView({self._decisions()!r})"
