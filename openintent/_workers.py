"""The worker pool of a run: its queue of ready intents and the reusable tasks that take them.

A worker takes the next ready intent; a new worker is started only when ready work is waiting
and no worker is idle or about to start. A handler that never suspends therefore costs no
task at all, and every handler that does suspend lets another worker pick up the next ready
intent, so concurrency grows exactly as far as the work allows.

In a durable store's run every dispatch waits for its commit: there a worker logs the first
dispatches of every ready intent it can take, waits once for the commit holding them all, and
then runs them like any others (a worker waiting for a commit is one task, not one per
intent).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._nodes import Node
from ._ports import Stoppable

__all__ = ["Batch", "WorkerPool"]

# A worker yields to the event loop after this many intents even if no handler suspended, so
# a long run of instant handlers cannot starve cancellation or other tasks.
_YIELD_EVERY = 256


class Batch(Protocol):
    """First dispatches logged together and waited for once (a durable store's run)."""

    def dispatch_first(self, node: Node) -> bool:
        """Log ``node``'s first dispatch, not waiting for its commit (``False``: it is not one
        that can, and nothing was logged)."""
        ...

    async def committed(self) -> None:
        """Wait until everything logged so far is committed."""
        ...


class WorkerPool:
    """Runs ``work(node)`` for each ready intent on reusable worker tasks.

    FIFO, or (``sequential``) one worker taking the ready intent declared first. Workers stop
    taking intents when ``run`` is stopped (halted), and leave once :meth:`stop` is called.
    """

    def __init__(
        self, run: Stoppable, work: Callable[[Node, bool], Awaitable[None]], *,
        sequential: bool, batch: Batch | None = None
    ) -> None:
        self._run = run
        self._work = work
        self._sequential = sequential
        # A durable store's run waits for a commit before each dispatch: a worker takes
        # every ready intent it can, logs their dispatches and waits once for them all.
        self._batch = None if sequential else batch
        self._dispatched: deque[Node] = deque()  # dispatched and committed, not run yet
        self._worker = self._plain_worker if self._batch is None else self._batching_worker
        self._max_workers = 1 if sequential else 1 << 62
        self._ready: deque[Node] = deque()
        self._ready_heap: list[tuple[int, Node]] = []
        self._tg: TaskGroup | None = None
        self._idle: list[anyio.Event] = []
        self._starting = 0  # workers started or woken but not yet running
        self._workers = 0
        self._open = True

    def start(self, tg: TaskGroup) -> None:
        """Start workers in ``tg`` from now on (a halt cancels that group)."""
        self._tg = tg

    def push(self, node: Node) -> None:
        """Queue a ready intent and wake (or start) a worker for it."""
        if self._sequential:
            heapq.heappush(self._ready_heap, (node.index, node))
        else:
            self._ready.append(node)
        self._wake()

    def stop(self) -> None:
        """Let every worker leave (idle ones at once)."""
        self._open = False
        for event in self._idle:
            event.set()
        self._idle.clear()

    def _wake(self) -> None:
        if self._idle:
            self._starting += 1
            self._idle.pop().set()
        elif self._starting == 0 and self._workers < self._max_workers:
            assert self._tg is not None
            self._starting += 1
            self._workers += 1
            self._tg.start_soon(self._worker)

    async def _plain_worker(self) -> None:
        self._starting -= 1
        ready = self._ready
        heap = self._ready_heap
        work = self._work
        run = self._run
        done = 0
        try:
            while self._open:
                if run.stopped:
                    return  # a guardrail stopped the run: dispatch nothing new
                if ready or heap:
                    # Sequential: the ready intent declared first, chosen when it is needed.
                    node = ready.popleft() if ready else heapq.heappop(heap)[1]
                    if ready or heap:
                        self._wake()
                    await work(node, False)
                    done += 1
                    if done % _YIELD_EVERY == 0:
                        await anyio.lowlevel.checkpoint()
                else:
                    wakeup = anyio.Event()
                    self._idle.append(wakeup)
                    await wakeup.wait()
                    if self._open:
                        self._starting -= 1
        finally:
            self._workers -= 1

    async def _batching_worker(self) -> None:
        """A worker of a durable store's run (FIFO): the first dispatches of every ready
        intent it can take are logged at once and waited for with one commit; the intents
        are then run one by one, by this worker or (when a handler suspends) by others."""
        self._starting -= 1
        ready = self._ready
        dispatched = self._dispatched
        work = self._work
        run = self._run
        batch = self._batch
        assert batch is not None
        done = 0
        try:
            while self._open:
                if run.stopped:
                    return  # a guardrail stopped the run: dispatch nothing new
                if dispatched:
                    node = dispatched.popleft()
                    if dispatched or ready:
                        self._wake()
                    await work(node, True)
                elif ready:
                    node = ready.popleft()
                    if batch.dispatch_first(node):
                        taken: list[Node] = []
                        while ready and batch.dispatch_first(ready[0]):
                            taken.append(ready.popleft())
                        if ready:  # one that cannot be batched: it need not wait
                            self._wake()
                        await batch.committed()
                        dispatched.extend(taken)
                        if dispatched or ready:
                            self._wake()
                        await work(node, True)
                    else:
                        if ready:
                            self._wake()
                        await work(node, False)
                else:
                    wakeup = anyio.Event()
                    self._idle.append(wakeup)
                    await wakeup.wait()
                    if self._open:
                        self._starting -= 1
                    continue
                done += 1
                if done % _YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
        finally:
            self._workers -= 1
