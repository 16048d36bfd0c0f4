"""What the PostgreSQL task queue's thread (:mod:`._pg_tasks`) is asked: calls from event
loops, and the coordinators' waits for outcomes.

A :class:`Call` is made on the caller's event loop (asyncio or trio) and answered on the
queue's thread, which then schedules the caller's wake-up on that loop. :class:`Outcomes`
keeps the waits for tasks to end: which tasks to look at in the thread's next round (new
waits; the waiting tasks of a run an ``openintent_done`` notice names; all of them at a
reconnection or a slow poll), and the run of each waiting task (learned at its first look).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio

from .._tasks import TaskOutcome
from ._writer_thread import waker

__all__ = ["Call", "Outcomes"]

_OPEN = frozenset({"ready", "claimed"})
_MOST_FRESH = 100_000  # fresh tasks kept at most (more: they are looked at when waited for)


class Call:
    """One request to the queue's thread, and its answer."""

    __slots__ = ("args", "error", "event", "kind", "result", "tries", "wake")

    def __init__(self, kind: str, args: tuple[Any, ...]) -> None:
        self.kind = kind
        self.args = args
        #: How many times the thread ran it (more than once: retried).
        self.tries = 0
        self.wake = waker()
        self.event = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def answer(self, result: Any = None, error: BaseException | None = None) -> None:
        """On the queue's thread: hand the answer to the caller's event loop."""
        self.result, self.error = result, error
        try:
            self.wake(self.event.set)
        except RuntimeError:
            pass  # its event loop is gone: nobody waits for the answer

    async def answered(self) -> Any:
        """Wait for the answer (on the caller's loop): the result, or its error raised."""
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.result


class Outcomes:
    """The waits for tasks to end (see the module docstring). Every method takes ``lock``
    (the queue's condition, notified when there is something to look at)."""

    def __init__(self, lock: threading.Condition) -> None:
        self._lock = lock
        self._waiters: dict[int, list[Call]] = {}
        self._run_of: dict[int, str] = {}
        self._of_run: dict[str, set[int]] = {}
        self._unknown: set[int] = set()  # waiting tasks whose run is not known yet
        self._runs_ended: set[str] = set()  # notices while some runs were unknown
        self._to_look: set[int] = set()
        self._looked = time.monotonic()  # the last look at every waiting task
        # Tasks this process queued, open then, with no notice of their run since: waiting
        # for one needs no first look (a notice will say when to look).
        self._fresh: dict[int, str] = {}
        self._fresh_of_run: dict[str, set[int]] = {}
        self._submitting = False
        self._noticed: set[str | None] = set()  # notices while a submission was going on

    def submitting(self, going: bool) -> None:
        """A submission starts (before its first try) or ends (after its last)."""
        with self._lock:
            self._submitting = going
            self._noticed.clear()

    def submitted(self, rows: list[tuple[int, str, str]]) -> None:
        """On the queue's thread, during a submission: its tasks (id, run, status). Those
        still open, of runs with no notice since the submission started, are fresh."""
        with self._lock:
            if None in self._noticed or len(self._fresh) > _MOST_FRESH:
                return  # the listener reconnected meanwhile; or nobody waits for them
            for task_id, run_id, status in rows:
                if status in _OPEN and run_id not in self._noticed:
                    self._fresh[task_id] = run_id
                    self._fresh_of_run.setdefault(run_id, set()).add(task_id)

    def wait(self, task_id: int, call: Call) -> None:
        """Wait for ``task_id`` to end (``call`` is answered with its outcome)."""
        with self._lock:
            self._waiters.setdefault(task_id, []).append(call)
            fresh = self._fresh.pop(task_id, None)
            if fresh is not None:  # no look needed: a notice of its run will come
                self._drop_fresh(task_id, fresh)
                if task_id not in self._run_of:
                    self._run_of[task_id] = fresh
                    self._of_run.setdefault(fresh, set()).add(task_id)
                return
            if task_id not in self._run_of:
                self._unknown.add(task_id)  # the first look learns its run
            self._to_look.add(task_id)  # it may have ended before anyone waited
            self._lock.notify()

    def _drop_fresh(self, task_id: int, run_id: str) -> None:
        tasks = self._fresh_of_run.get(run_id)
        if tasks is not None:
            tasks.discard(task_id)
            if not tasks:
                del self._fresh_of_run[run_id]

    def stop_waiting(self, task_id: int, call: Call) -> None:
        """``call`` no longer waits (cancelled)."""
        with self._lock:
            waiters = self._waiters.get(task_id, [])
            if call in waiters:
                waiters.remove(call)
            if not waiters:
                self._forget(task_id)

    def run_ended_some(self, run_id: str | None) -> None:
        """An ``openintent_done`` notice (``None``: the listener reconnected: any task may
        have ended unnoticed). On the listener's thread."""
        with self._lock:
            if self._submitting:
                self._noticed.add(run_id)
            if run_id is None:
                self._fresh.clear()
                self._fresh_of_run.clear()
                self._to_look.update(self._waiters)
            else:
                for task_id in self._fresh_of_run.pop(run_id, ()):
                    del self._fresh[task_id]  # it may end before anyone waits: look then
                self._to_look.update(self._of_run.get(run_id, ()))
                if self._unknown:
                    self._runs_ended.add(run_id)
            if self._to_look:
                self._lock.notify()

    def waiting(self, task_id: int) -> bool:
        """Whether anyone waits for ``task_id``."""
        return task_id in self._waiters

    def look_again(self, task_id: int) -> None:
        """Look at ``task_id`` in the next round (if anyone waits for it)."""
        with self._lock:
            self._to_look.add(task_id)

    def pending(self, poll: float) -> float | None:
        """With the lock held by the queue's thread: ``0`` when there is something to look
        at (at the slow poll: every waiting task), else seconds until the next poll
        (``None``: nobody waits)."""
        if self._to_look:
            return 0.0
        if not self._waiters:
            return None
        left = self._looked + poll - time.monotonic()
        if left <= 0:
            self._to_look.update(self._waiters)
            return 0.0
        return left

    def to_look(self) -> tuple[list[int], list[int]]:
        """Take the tasks to look at now, and those of them whose run is not known."""
        with self._lock:
            ids = [task_id for task_id in self._to_look if task_id in self._waiters]
            self._to_look.clear()
            if len(ids) == len(self._waiters):
                self._looked = time.monotonic()
            self._runs_ended.clear()  # from now on, a notice may come after the look
            return ids, [task_id for task_id in ids if task_id in self._unknown]

    def still_going(self, task_id: int, run_id: str) -> None:
        """A look found ``task_id`` (of ``run_id``) not ended yet."""
        with self._lock:
            if task_id in self._unknown and task_id in self._waiters:
                self._unknown.discard(task_id)
                self._run_of[task_id] = run_id
                self._of_run.setdefault(run_id, set()).add(task_id)
                if run_id in self._runs_ended:  # a notice came before its run was known
                    self._to_look.add(task_id)

    def resolve(self, task_id: int, outcome: TaskOutcome | BaseException) -> None:
        """Answer every wait for ``task_id``: its outcome, or an error."""
        with self._lock:
            waiters = self._waiters.pop(task_id, [])
            self._forget(task_id)
        for call in waiters:
            if isinstance(outcome, BaseException):
                call.answer(error=outcome)
            else:
                call.answer(outcome)

    def end_all(self, error: BaseException) -> None:
        """Answer every wait with ``error`` (the queue is closing)."""
        with self._lock:
            waiting = [call for calls in self._waiters.values() for call in calls]
            for task_id in list(self._waiters):
                self._forget(task_id)
        for call in waiting:
            call.answer(error=error)

    def _forget(self, task_id: int) -> None:
        """Drop what is kept about a task nobody waits for any more (lock held)."""
        self._waiters.pop(task_id, None)
        self._unknown.discard(task_id)
        run_id = self._run_of.pop(task_id, None)
        if run_id is not None:
            tasks = self._of_run.get(run_id)
            if tasks is not None:
                tasks.discard(task_id)
                if not tasks:
                    del self._of_run[run_id]
