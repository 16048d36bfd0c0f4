"""A resumed run's earlier tasks: dropped before the run goes on.

When a run with remote agents (a store with a task queue: ``postgresql://``,
``memory://?workers=1``) is resumed by a new coordinator (a standby's failover, an adoption
by ``rt.serve``, ``rt.resume``), the tasks its earlier sitting queued and no worker finished
are stale: the resume reopens their intents and dispatches them again as new attempts. So,
holding the run's lease and before it dispatches anything, the resumed run cancels them
(``queue.cancel_run``): no worker starts one any more, a worker running one stops it at its
next renewal, and its finish is refused. The same goes for the tasks of its sub-portfolios
(a coordinator's ``execute``): those are never resumed, the coordinator's new attempt runs a
new one.

Nothing of this is journaled: a task is the queue's, and the log already says what the
resume reopened (``run_resumed``).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import structlog

from ._logging import logging_configured
from ._tasks import TaskQueue

__all__ = ["drop_stale_tasks"]


async def drop_stale_tasks(backend: Any, run_id: str) -> int:
    """Cancel the open tasks of run ``run_id`` and of its sub-portfolios (see the module
    docstring); how many. Nothing to do for a store without a task queue."""
    queue: TaskQueue | None = getattr(backend, "tasks", None)
    if queue is None:
        return 0
    runs = (await anyio.to_thread.run_sync(backend.runs) if backend.durable
            else backend.runs())
    children: dict[str, list[str]] = {}
    for info in runs:
        if info.parent is not None:
            children.setdefault(info.parent, []).append(info.portfolio_id)
    stale, todo = 0, [run_id]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, ()))
        stale += await queue.cancel_run(current)
    if stale and logging_configured():
        structlog.get_logger("openintent").info(
            "resumed run cancelled its earlier sitting's tasks", run_id=run_id, tasks=stale)
    return stale
