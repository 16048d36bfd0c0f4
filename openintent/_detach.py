"""Starting a run for the workers of its store to coordinate (``openintent run --detach``).

The run is validated and begun here (its ``run_started`` and ``created`` events, committed),
then left: ``backend.detach_run`` gives its lease back and marks it detached, and any
``rt.serve()`` / ``openintent worker`` of the store that has its coordinator adopts it
(:mod:`._adopt`) and runs it to its end. Nothing of the run is dispatched here.
"""

from __future__ import annotations

from typing import Any

import anyio.lowlevel

from ._worker import task_queue_of

__all__ = ["start_detached"]


async def start_detached(runtime: Any, spec: Any, coordinator: Any = None,
                         call: str = "--detach") -> str:
    """Begin ``spec`` in ``runtime``'s store, wait for its opening events to commit, detach
    it, and return its run id."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    launcher = runtime._runs
    backend = launcher.backend
    task_queue_of(backend, call)
    run = runtime._open(call, spec, coordinator)
    launcher.active.remove(run)  # begun, never driven here
    holder = launcher._holders.pop(run, None)
    store = run.store
    journal = store.journal
    if journal is not None:
        await journal.wait_committed(len(store.events))
    if holder is not None:
        backend.release_run(store.portfolio_id, holder)
    backend.detach_run(store.portfolio_id)
    return str(store.portfolio_id)
