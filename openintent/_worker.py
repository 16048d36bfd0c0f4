"""``rt.serve()``: a worker for the runs of its store (``openintent worker`` runs one).

It claims the tasks (:mod:`openintent._tasks`) of the agents this process has
(``Runtime(agents=[...])``, or every registered ``@Agent`` without a list), runs each one's
``@on_assignment`` handler with a worker-side context (:mod:`._worker_context`), and
finishes the task with the claim's fencing token. At most ``concurrency`` handlers run at
once; claims are renewed every third of the store's ``task_ttl``, and a handler whose claim
was lost (the run cancelled the task, or the claim expired and another worker took it) is
cancelled. At its start it lets go of the claims an earlier process under the same worker id
held (``forget_worker``), so a restarted worker's tasks are taken again at once.

It also adopts runs that need a coordinator (:mod:`._adopt`). Everything goes on in the
serve call's task group: cancelling ``serve`` leaves nothing running.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from ._clock import Clock
from ._context import active_run
from ._dispatch import AgentTable, BoundAgent, call_handler
from ._json_data import json_state
from ._logging import logging_configured
from ._registry import HookKind
from ._retrying import call_error
from ._tasks import Task, TaskQueue
from ._worker_context import ClaimLost, WorkerContext, intent_of
from .errors import OpenIntentError

__all__ = ["POLL_SECONDS", "Worker", "task_queue_of"]

#: How long a worker waits for a notification before it looks for work anyway.
POLL_SECONDS = 2.0

_log = structlog.get_logger("openintent")


def task_queue_of(backend: Any, call: str) -> TaskQueue:
    """The store's task queue, or an error saying which stores have one."""
    queue: TaskQueue | None = getattr(backend, "tasks", None)
    if queue is None:
        raise OpenIntentError(
            f"{call} needs a store with a task queue, where runs hand their intents to "
            f"workers: 'postgresql://...' (or 'memory://?workers=1' in one process); "
            f"{backend.url} has none")
    return queue


async def pause(clock: Clock, seconds: float, on_clock: bool) -> None:
    """Wait ``seconds`` on ``clock`` (a store in this process: ``memory://?workers=1``) or on
    real time (claims and leases between processes), as a cancel scope's deadline, not a
    sleep: a virtual clock still jumps meanwhile."""
    if on_clock:
        await clock.sleep(seconds)
        return
    with anyio.move_on_after(seconds):
        await anyio.Event().wait()


def default_worker_id() -> str:
    """A worker id unique to this process: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Worker:
    """One ``rt.serve()`` call's worker (see the module docstring)."""

    def __init__(self, queue: TaskQueue, agents: AgentTable, clock: Clock, concurrency: int,
                 worker_id: str) -> None:
        self.queue = queue
        self.table = agents
        self.clock = clock
        self.concurrency = concurrency
        self.id = worker_id
        self.agents = agents.local_ids()
        self.running: dict[int, tuple[Task, anyio.CancelScope]] = {}
        self._freed: anyio.Event | None = None
        self._busy: anyio.Event | None = None

    async def serve(self, extra: Callable[[], Any] | None = None) -> None:
        """Claim and run tasks until cancelled (``extra``: another loop to run alongside,
        the adoption of runs)."""
        forgotten = await self.queue.forget_worker(self.id)
        if logging_configured():
            _log.info("worker serving", worker=self.id, agents=self.agents,
                      forgotten=forgotten)
        async with anyio.create_task_group() as group:
            group.start_soon(self._renew)
            if extra is not None:
                group.start_soon(extra)
            if not self.agents:
                return
            while True:
                free = self.concurrency - len(self.running)
                if free <= 0:
                    self._freed = anyio.Event()
                    await self._freed.wait()
                    continue
                tasks = await self.queue.claim(self.id, self.agents, free)
                if not tasks:
                    await self.queue.wait_for_work(self.agents, POLL_SECONDS)
                    continue
                for task in tasks:
                    scope = anyio.CancelScope()
                    self.running[task.id] = (task, scope)
                    group.start_soon(self._run, task, scope)
                if self._busy is not None:
                    self._busy.set()

    async def _renew(self) -> None:
        """Renew the claims of the tasks running now, every third of the TTL; cancel the
        handlers of the claims that are no longer this worker's."""
        period = self.queue.task_ttl / 3
        while True:
            if not self.running:
                self._busy = anyio.Event()
                await self._busy.wait()
                self._busy = None
            await pause(self.clock, period, getattr(self.queue, "clock", None) is not None)
            tasks = [task for task, _scope in self.running.values()]
            if not tasks:
                continue
            lost = await self.queue.renew(tasks)
            for task_id in lost:
                entry = self.running.get(task_id)
                if entry is not None and logging_configured():
                    _log.info("worker lost a task's claim; its handler stops",
                              worker=self.id, task=task_id, run_id=entry[0].run_id)
                if entry is not None:
                    entry[1].cancel()

    async def _run(self, task: Task, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                await self._do(task)
        finally:
            self.running.pop(task.id, None)
            if self._freed is not None:
                self._freed.set()

    async def _do(self, task: Task) -> None:
        """Run one task's handler and finish the task with how it ended."""
        intent = intent_of(task)
        context = WorkerContext(task, intent, self.queue, self.clock)
        token = active_run.set(context)
        try:
            value = await call_agent(self.table.get(task.agent_id), intent, self.clock)
        except ClaimLost:
            return
        except Exception as exc:
            status: Any = "failed"
            result: dict[str, Any] = {"error_type": type(exc).__name__, "error": str(exc),
                                      "ops": context.ops}
            data = _error_data(exc)
            if data:
                result["error_data"] = data
        else:
            status, result = "done", {"value": value, "ops": context.ops}
        finally:
            active_run.reset(token)
        if not await self.queue.finish(task, status, result) and logging_configured():
            _log.info("worker's finish was refused: the task's claim is no longer its own",
                      worker=self.id, task=task.id, run_id=task.run_id)


async def call_agent(agent: BoundAgent, intent: Any, clock: Clock) -> Any:
    """An agent's ``@on_assignment`` work on ``intent`` (as the run's own process calls
    it): its result as plain JSON data, or ``None``."""
    from ._data import to_plain

    direct = agent.direct
    if direct is not None:
        try:
            value = await direct(intent)
        except TypeError as exc:
            error = call_error(direct, agent.assignment_name, (intent,), exc)
            if error is exc:
                raise
            raise error from exc
        return None if value is None else to_plain(json_state(value, agent.assignment_name))
    merged: dict[str, Any] | None = None
    for handler in agent.handlers_of(HookKind.ASSIGNMENT):
        value = json_state(await call_handler(handler, intent, clock=clock), handler.name)
        if value is not None:
            merged = value if merged is None else {**merged, **value}
    return None if merged is None else to_plain(merged)


def _error_data(exc: Exception) -> dict[str, Any]:
    """An openintent error's own attributes that are plain data (the coordinator sets them
    on the error it raises)."""
    if not isinstance(exc, OpenIntentError):
        return {}
    return {key: value for key, value in vars(exc).items()
            if isinstance(value, str | int | float | bool | None)}
