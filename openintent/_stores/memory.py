"""The in-memory event backend (``memory://``): each run's events in a list.

A run's list lives as long as something holds it (its running scheduler, its result, a
handle): the backend itself holds runs weakly, so a long-lived runtime that runs many
portfolios does not keep every log forever.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from anyio.streams.memory import MemoryObjectSendStream

from ..models import Event

__all__ = ["MemoryBackend"]


class _RunList(list[tuple[str, float, str | None, Any]]):
    """One run's events (a list, so appending costs what appending to a list costs; a
    subclass, so the backend can hold it weakly). ``extend`` of a list is all or nothing."""

    __slots__ = ("__weakref__",)


class MemoryBackend:
    """Runs' events in memory (see the module docstring)."""

    def __init__(self) -> None:
        self._runs: weakref.WeakValueDictionary[str, _RunList] = weakref.WeakValueDictionary()
        self._order: list[str] = []
        self.subscribers: list[MemoryObjectSendStream[Event]] = []

    def create_run(self, run_id: str, name: str) -> _RunList:
        if run_id in self._runs:
            raise ValueError(f"run {run_id!r} ({name!r}) is already in this store")
        events = self._runs[run_id] = _RunList()
        self._order = [known for known in self._order if known in self._runs]
        self._order.append(run_id)
        return events

    def read(self, run_id: str) -> Sequence[tuple[str, float, str | None, Any]]:
        return self._runs[run_id]

    def runs(self) -> list[str]:
        return [run_id for run_id in self._order if run_id in self._runs]

    def subscribe(self, stream: MemoryObjectSendStream[Event]) -> None:
        self.subscribers.append(stream)

    def unsubscribe(self, stream: MemoryObjectSendStream[Event]) -> None:
        if stream in self.subscribers:
            self.subscribers.remove(stream)

    def close(self) -> None:
        for stream in self.subscribers:
            stream.close()
        self.subscribers.clear()
