"""Starting a run for the workers of its store to coordinate (``openintent run --detach``,
``client.start_portfolio``).

The run is validated and begun here (its ``run_started`` and ``created`` events, committed),
then left: ``backend.detach_run`` gives its lease back and marks it detached, and any
``rt.serve()`` / ``openintent worker`` of the store that has its coordinator adopts it
(:mod:`._adopt`) and runs it to its end. Nothing of the run is dispatched here.
"""

from __future__ import annotations

from typing import Any

import anyio.lowlevel

from ._worker import task_queue_of

__all__ = ["start_detached", "start_draft_detached"]


async def start_detached(runtime: Any, spec: Any, coordinator: Any = None,
                         call: str = "--detach") -> str:
    """Begin ``spec`` in ``runtime``'s store, wait for its opening events to commit, detach
    it, and return its run id."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    launcher = runtime._runs
    backend = launcher.backend
    task_queue_of(backend, call)
    return await _leave(launcher, runtime._open(call, spec, coordinator))


async def start_draft_detached(runtime: Any, portfolio_id: str, call: str) -> str:
    """Begin a client's draft portfolio (its ``run_resumed`` from ``draft``, committed) in
    ``runtime``'s store and detach it, as :func:`start_detached` does a new run."""
    from ._resume import open_resumption

    await anyio.lowlevel.checkpoint_if_cancelled()
    launcher = runtime._runs
    task_queue_of(launcher.backend, call)
    resumption = open_resumption(launcher, portfolio_id, None, None, None, call)
    assert resumption.run is not None  # a draft (the caller checked): never an ended log
    return await _leave(launcher, resumption.run)


async def _leave(launcher: Any, run: Any) -> str:
    """Wait for a begun run's events to commit, then detach it (``detach_run`` gives its
    lease back too: one call, one notice to the adopters)."""
    launcher.active.remove(run)  # begun, never driven here
    launcher._holders.pop(run, None)  # its lease: given back by detach_run
    store = run.store
    journal = store.journal
    if journal is not None:
        await journal.wait_committed(len(store.events))
    launcher.backend.detach_run(store.portfolio_id)
    return str(store.portfolio_id)
