"""The worker pool of a run: its queue of ready intents and the reusable tasks that take them.

A worker takes the next ready intent; a new worker is started only when ready work is waiting
and no worker is idle or about to start. A handler that never suspends therefore costs no
task at all, and every handler that does suspend lets another worker pick up the next ready
intent, so concurrency grows exactly as far as the work allows.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._nodes import Node
from ._ports import Stoppable

__all__ = ["WorkerPool"]

# A worker yields to the event loop after this many intents even if no handler suspended, so
# a long run of instant handlers cannot starve cancellation or other tasks.
_YIELD_EVERY = 256


class WorkerPool:
    """Runs ``work(node)`` for each ready intent on reusable worker tasks.

    FIFO, or (``sequential``) one worker taking the ready intent declared first. Workers stop
    taking intents when ``run`` is stopped (halted), and leave once :meth:`stop` is called.
    """

    def __init__(
        self, run: Stoppable, work: Callable[[Node], Awaitable[None]], *, sequential: bool
    ) -> None:
        self._run = run
        self._work = work
        self._sequential = sequential
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

    async def _worker(self) -> None:
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
                    await work(node)
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
