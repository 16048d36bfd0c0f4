"""Capture the events of every run started inside a block (like structlog's capture_logs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._store import event_captures
from ..models import Event

__all__ = ["capture_events"]


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
