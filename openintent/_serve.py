"""``rt.serve()``: a worker (:mod:`._worker`) and an adopter of runs (:mod:`._adopt`) in
one task group."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from ._adopt import Adopter
from ._dispatch import AgentTable
from ._launch import Launcher
from ._remote import remote_definition
from ._worker import POLL_SECONDS, Worker, default_worker_id, task_queue_of
from .errors import OpenIntentError

__all__ = ["serve"]


async def serve(launcher: Launcher, table: AgentTable, guardrails: Sequence[Any],
                blocking_threshold: float | None, concurrency: int,
                worker_id: str | None,
                rebuild: Callable[[str], tuple[Any, Any]] | None = None) -> None:
    """Serve the store of ``launcher`` with the agents of ``table`` until cancelled
    (``rebuild``: how to rebuild an adopted run's spec and coordinator, see
    :class:`~openintent._adopt.Adopter`)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise OpenIntentError(f"rt.serve(concurrency=...) takes a whole number >= 1, got "
                              f"{concurrency!r}")
    if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
        raise OpenIntentError(f"rt.serve(worker_id=...) takes a non-empty str, got "
                              f"{worker_id!r}")
    queue = task_queue_of(launcher.backend, "rt.serve()")
    worker = Worker(queue, table, launcher.clock, concurrency, worker_id or default_worker_id())
    adopter = Adopter(launcher, table, functools.partial(remote_definition, queue=queue),
                      guardrails, POLL_SECONDS, blocking_threshold, rebuild)
    async with anyio.create_task_group() as group:
        group.start_soon(worker.serve, functools.partial(adopter.serve, group))
