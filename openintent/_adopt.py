"""Adopting runs that need a coordinator: the other half of ``rt.serve()``.

A run is adoptable (``backend.adoptable_runs()``) when it was detached (``openintent run
--detach``) or its coordinator is gone (its lease is free or expired) while its log has no
end. A serving runtime resumes such a run (``rt.resume``, in the serve call's task group) when
it can build the run's coordinator: none, or a ``@Coordinator`` it has by the id the log
names. The resume takes the run's lease first, so two serving processes never both adopt a
run (the second gets :class:`~openintent.errors.RunInUseError` and skips it).

An adopted run dispatches every intent through the store's task queue, even to agents this
process has, so its work spreads over every worker of the store.

On a store that notifies (``postgresql://``: ``backend.listener``) the adopter looks again
at once when a run's lease is given back, a run is detached, starts, resumes or ends (the
``openintent_runs`` channel); every ``poll`` seconds it looks anyway: a coordinator killed
with its lease held sends nothing (its lease expires, or its process is seen gone).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskGroup

from ._dispatch import AgentTable, BoundAgent
from ._launch import Launcher
from ._plan import Planner
from ._registry import AgentDefinition
from ._resume import Resumption, open_resumption
from ._worker import pause
from .errors import OpenIntentError, RunInUseError

__all__ = ["Adopter", "AllRemote"]

_log = structlog.get_logger("openintent")


class AllRemote:
    """The agents of an adopted run: every agent remote (a task for any worker), the
    coordinator this process's own."""

    def __init__(self, table: AgentTable, remote: Callable[[str], AgentDefinition]) -> None:
        self._table = table
        self._remote = remote
        self._bound: dict[str, BoundAgent] = {}

    def get(self, agent_id: str) -> BoundAgent:
        bound = self._bound.get(agent_id)
        if bound is None:
            definition = self._remote(agent_id)
            bound = self._bound[agent_id] = BoundAgent(definition, definition.instance)
        return bound

    def resolve(self, obj: Any) -> BoundAgent:
        return self._table.resolve(obj)


class Adopter:
    """Looks for adoptable runs at each notice (see the module docstring) or every ``poll``
    seconds, and resumes them in ``group``."""

    def __init__(self, launcher: Launcher, table: AgentTable,
                 remote: Callable[[str], AgentDefinition], guardrails: Any, poll: float,
                 blocking_threshold: float | None,
                 rebuild: Callable[[str], tuple[Any, Any]] | None = None) -> None:
        self.backend = launcher.backend
        self.clock = launcher.clock
        self.launcher = Launcher(self.backend, Planner(AllRemote(table, remote), guardrails),
                                 launcher.clock, random.Random(), blocking_threshold)
        self.poll = poll
        #: The spec and coordinator to resume a run with (``openintent worker``: its
        #: workflow file), else ``(None, None)``: the log's plan and coordinator id.
        self.rebuild = rebuild
        self.adopted: set[str] = set()  # going on here now
        self._refused: set[str] = set()  # their coordinators cannot be built here

    async def serve(self, group: TaskGroup) -> None:
        """Adopt runs until cancelled: look, then wait for a notice that a run may need a
        coordinator (a store that notifies), or ``poll`` seconds."""
        listener = getattr(self.backend, "listener", None)
        watch = None if listener is None else listener.watch("openintent_runs")
        try:
            while True:
                if watch is not None:
                    watch.clear()  # about to look: a notice from now on wakes the next wait
                for run_id in await self._adoptable():
                    resumption = self._open(run_id)
                    if resumption is not None:
                        self.adopted.add(run_id)
                        group.start_soon(self._drive, run_id, resumption)
                if watch is None:
                    await pause(self.clock, self.poll, not self.backend.durable)
                else:
                    await watch.wait(self.poll)
        finally:
            if watch is not None:
                watch.close()

    async def _adoptable(self) -> list[str]:
        """The runs to try: adoptable ones not tried yet (the store never lists a
        sub-portfolio: its parent's coordinator runs it)."""
        adoptable = getattr(self.backend, "adoptable_runs", None)
        if adoptable is None:
            return []

        def look() -> list[str]:
            return [run_id for run_id in adoptable()
                    if run_id not in self.adopted and run_id not in self._refused]

        return look() if not self.backend.durable else await anyio.to_thread.run_sync(look)

    def _open(self, run_id: str) -> Resumption | None:
        try:
            spec, coordinator = (None, None) if self.rebuild is None else self.rebuild(run_id)
            return open_resumption(self.launcher, run_id, spec, coordinator, None,
                                   "rt.serve()")
        except RunInUseError:
            return None  # another process adopted it first
        except OpenIntentError as exc:
            self._refused.add(run_id)
            _log.warning("a run needs a coordinator this worker cannot build; another "
                         "worker may adopt it", run_id=run_id, error=str(exc))
            return None

    async def _drive(self, run_id: str, resumption: Resumption) -> None:
        try:
            await resumption.drive()
        except Exception as exc:  # noqa: BLE001 - one run's fault does not stop the worker
            _log.error("adopted run stopped with an error", run_id=run_id, error=repr(exc))
        finally:
            self.adopted.discard(run_id)
