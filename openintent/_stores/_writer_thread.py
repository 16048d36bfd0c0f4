"""A long-lived thread that runs a backend's commits one after another, and the way it tells
the event loop a commit is done.

A commit handed to :meth:`WriterThread.submit` runs on the thread; its ``done`` callback is
then scheduled on the event loop that submitted it (asyncio: ``loop.call_soon_threadsafe``,
trio: the run's token ``run_sync_soon``). A round trip costs a queue put, the thread's work
and one wake-up of the loop: several times cheaper than a round trip through
``anyio.to_thread`` (a worker thread checked out of a pool, a capacity limiter, a task that
waits for it), which matters when a run waits for a commit before each step.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Wake", "WriterThread", "waker"]

#: Schedules ``callback(*args)`` on the event loop it belongs to (from any thread).
Wake = Callable[..., Any]


def waker() -> Wake:
    """How another thread schedules a callback on the running event loop (asyncio or trio)."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # no asyncio loop in this thread
        pass
    # Not asyncio: anyio's other backend, trio (imported only when it is the one running).
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token().run_sync_soon  # type: ignore[no-any-return]
        except RuntimeError:  # not in trio either
            pass
    raise RuntimeError("a journal commit was asked for outside asyncio and trio")


class WriterThread:
    """One daemon thread running the work it is given in order (see the module docstring).

    Started by the first :meth:`submit`; :meth:`stop` lets it finish what was submitted and
    joins it. The thread holds no reference to its owner, so an owner nobody closes can still
    be collected (its finalizer calls :meth:`stop` with ``join=False``).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stopped = False

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work()`` on the thread after everything submitted before (``work`` handles
        its own errors). Raises :class:`RuntimeError` once stopped."""
        with self._lock:  # so nothing is queued behind the stop
            if self.stopped:
                raise RuntimeError(f"the writer thread {self._name} is stopped")
            if self._thread is None:
                thread = threading.Thread(target=_serve, args=(self._queue,),
                                          name=self._name, daemon=True)
                thread.start()
                self._thread = thread
            self._queue.put(work)

    def stop(self, join: bool = True) -> None:
        """Stop the thread once it has run everything submitted (and wait for it)."""
        with self._lock:
            if self.stopped:
                thread = None if not join else self._thread
            else:
                self.stopped = True
                thread = self._thread
                if thread is not None:
                    self._queue.put(None)
        if join and thread is not None and thread is not threading.current_thread():
            thread.join()


def _serve(work_queue: queue.SimpleQueue[Callable[[], None] | None]) -> None:
    get = work_queue.get
    while True:
        work = get()
        if work is None:
            return
        work()
        del work  # drop the reference (and what it holds) before waiting again
