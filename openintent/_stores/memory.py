"""The in-memory event backend (``memory://``): each run's events in a list.

A run's list lives as long as something holds it (its running scheduler, its result, a
handle): the backend itself holds runs weakly, so a long-lived runtime that runs many
portfolios does not keep every log forever. Nothing is durable: a log is never a
:class:`~openintent._stores.Journal`, and nothing waits for a commit.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from anyio.streams.memory import MemoryObjectSendStream

from ..errors import RunInUseError, RunNotFoundError
from ..models import Event
from . import RunInfo, Subscribers, sitting_base

__all__ = ["MemoryBackend", "MemoryRuns", "shared_runs"]


class _RunList(list[tuple[str, float, str | None, Any]]):
    """One run's events (a list, so appending costs what appending to a list costs; a
    subclass, so the backend can hold it weakly). ``extend`` of a list is all or nothing."""

    __slots__ = ("__weakref__", "name", "parent", "timebase")

    name: str
    parent: str | None
    timebase: float


class MemoryRuns:
    """What a ``memory://`` store holds: the runs (weakly, but for those :meth:`keep` holds:
    a client's portfolios), their order, the run leases and the client leases. One per
    process (per registry: see :func:`shared_runs`), shared by every backend opened on
    ``memory://``; each backend has its own subscribers."""

    def __init__(self) -> None:
        self.runs: weakref.WeakValueDictionary[str, _RunList] = weakref.WeakValueDictionary()
        self.order: list[str] = []
        self.leases: dict[str, str] = {}
        self.kept: dict[str, _RunList] = {}
        #: The client leases (``openintent._leases.LeaseTable``), made on first use.
        self.lease_table: Any = None
        #: The task queue (``openintent._task_memory.MemoryTaskQueue``), made when a backend
        #: opens the store as ``memory://?workers=1``.
        self.tasks: Any = None
        #: The runs detached for a worker to adopt (``detach_run``).
        self.detached: set[str] = set()


def shared_runs() -> MemoryRuns:
    """The ``memory://`` store of this process: the current registry's (the pytest plugin
    gives each test a registry, so a store, of its own)."""
    from .._registry import current_registry

    stores = current_registry().stores
    runs = stores.get("memory://")
    if runs is None:
        runs = stores["memory://"] = MemoryRuns()
    return cast(MemoryRuns, runs)


class MemoryBackend(Subscribers):
    """Runs' events in memory (see the module docstring). ``shared``: the store it opens
    (the process's ``memory://`` store), else one of its own."""

    durable = False

    def __init__(
        self, url: str = "memory://", shared: MemoryRuns | None = None, *, workers: bool = False,
        task_ttl: float = 30.0,
    ) -> None:
        self.url = url
        self.shared = shared if shared is not None else MemoryRuns()
        #: The store's task queue when opened as ``memory://?workers=1`` (remote agents and
        #: ``rt.serve`` in this process), else ``None``: every agent runs in its run's task.
        self.tasks: Any = None
        if workers:
            if self.shared.tasks is None:
                from .._task_memory import MemoryTaskQueue

                self.shared.tasks = MemoryTaskQueue(task_ttl)
            self.tasks = self.shared.tasks
        self._runs = self.shared.runs
        self._leases = self.shared.leases
        self.subscribers: list[MemoryObjectSendStream[Event]] = []

    @property
    def _order(self) -> list[str]:
        return self.shared.order

    @_order.setter
    def _order(self, order: list[str]) -> None:
        self.shared.order = order

    @contextmanager
    def client_write(self, run_id: str) -> Iterator[_RunList]:
        """A client's write to a run's log: the log itself (one thread writes at a time)."""
        yield self._log(run_id)

    def read_list(self, run_id: str) -> _RunList:
        """The run's log."""
        return self._log(run_id)

    def lease_table(self) -> Any:
        """The client leases of this store (``openintent._leases.LeaseTable``)."""
        if self.shared.lease_table is None:
            from .._leases import LeaseTable

            self.shared.lease_table = LeaseTable()
        return self.shared.lease_table

    def keep(self, run_id: str) -> None:
        """Hold the run for as long as the store lives (a client's portfolio: nothing else
        holds it between the client's calls)."""
        self.shared.kept[run_id] = self._log(run_id)

    def create_run(
        self, run_id: str, name: str, *, parent: str | None = None, timebase: float = 0.0
    ) -> _RunList:
        if run_id in self._runs:
            raise ValueError(f"run {run_id!r} ({name!r}) is already in this store")
        events = self._runs[run_id] = _RunList()
        events.name = name
        events.parent = parent
        events.timebase = timebase
        self._order = [known for known in self._order if known in self._runs]
        self._order.append(run_id)
        return events

    def open_run(self, run_id: str) -> _RunList:
        return self._log(run_id)

    def read(self, run_id: str) -> Sequence[tuple[str, float, str | None, Any]]:
        return self._log(run_id)

    def _log(self, run_id: str) -> _RunList:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(
                f"the store {self.url} holds no run {run_id!r} (a memory:// store keeps a run "
                "while its result or handle is held, in this process only)"
            ) from None

    def timebase(self, run_id: str) -> float:
        return self._log(run_id).timebase

    def runs(self) -> list[RunInfo]:
        infos = []
        for run_id in self._order:
            events = self._runs.get(run_id)
            if events is not None:
                infos.append(_info(run_id, events))
        return infos

    def acquire_run(self, run_id: str, holder: str) -> None:
        held = self._leases.get(run_id)
        if held is not None and held != holder:
            raise RunInUseError(f"run {run_id!r} is in use by {held} in this process")
        self._leases[run_id] = holder

    def release_run(self, run_id: str, holder: str) -> None:
        if self._leases.get(run_id) == holder:
            del self._leases[run_id]

    def detach_run(self, run_id: str) -> None:
        """Leave a running run to whichever ``rt.serve`` of this process adopts it: its lease
        is given back, and the store holds the run until it ends."""
        self.keep(run_id)
        self._leases.pop(run_id, None)
        self.shared.detached.add(run_id)

    def adoptable_runs(self) -> list[str]:
        """The detached runs still running that no one holds now (``rt.serve`` adopts
        them). Only detached ones: a ``memory://`` run going on holds no lease. Never a
        sub-portfolio: its parent's coordinator runs it."""
        adoptable = []
        for run_id in sorted(self.shared.detached):
            events = self._runs.get(run_id)
            info = None if events is None else _info(run_id, events)
            if info is None or info.status != "running":
                self.shared.detached.discard(run_id)
            elif run_id not in self._leases and info.parent is None:
                adoptable.append(run_id)
        return adoptable

    def close(self) -> None:
        self.close_subscribers()


def _info(run_id: str, events: _RunList) -> RunInfo:
    """A run's listing, from its first and last events."""
    status = "running"
    started_at = ended_at = None
    if events:
        started_at = _utc(events.timebase + events[0][1])
        last = events[-1]
        if (events[0][3] or {}).get("draft") and not any(
                event[0] == "run_resumed" for event in events):
            status = "draft"  # a client's portfolio that has not run yet
        elif last[0] == "run_finished":
            status = (last[3] or {}).get("status", "failed")
            ended_at = _utc(sitting_base(events, events.timebase) + last[1])
    return RunInfo(run_id, events.name, status, started_at, ended_at, events.parent)


def _utc(posix: float) -> datetime:
    return datetime.fromtimestamp(posix, UTC)
