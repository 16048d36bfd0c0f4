"""``openintent worker STORE --agents MODULE``: serve the runs of a store with this process's
agents (``rt.serve``), and ``openintent run FILE --store URL --detach``: start a run for the
store's workers to coordinate.

Both need a store with a task queue (``postgresql://``): a SQLite journal runs every agent
in its run's own process, and ``memory://`` ends with the process.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Callable
from typing import Any

import anyio

from .._detach import start_detached
from .._serve import serve
from ..errors import OpenIntentError
from ..models import EventType
from ..runtime import Runtime
from ..workflow import WorkflowSpec
from ._agents import import_agents
from ._common import EXIT_INTERRUPTED, EXIT_OK, Streams, fail
from ._loading import load
from ._origin import ORIGIN_KEYS, CommandWorkflow
from ._store_url import store_url

__all__ = ["detach_run", "has_task_queue", "worker_command"]


def has_task_queue(url: str) -> bool:
    """Whether a store URL names a store with a task queue (for processes to share work)."""
    return url.startswith(("postgresql://", "postgres://"))


def worker_command(args: argparse.Namespace, streams: Streams) -> int:
    """Serve ``args.store`` until Ctrl-C (or SIGTERM); return the exit status."""
    url = store_url(args.store)
    if not has_task_queue(url):
        return fail(streams, f"workers need a postgresql:// store (a store with a task queue, "
                    f"shared by the processes of a run); {args.store} has none: "
                    "`openintent worker postgresql://USER@HOST/DB --agents MODULE`")
    if args.concurrency < 1:
        return fail(streams, f"--concurrency takes a whole number >= 1, got {args.concurrency}")
    try:
        agents = import_agents(args.agents)
    except OpenIntentError as exc:
        return fail(streams, str(exc))
    try:
        return anyio.run(_serve, args, url, agents, streams, backend="asyncio")
    except OpenIntentError as exc:
        return fail(streams, str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _serve(args: argparse.Namespace, url: str, agents: list[Any] | None,
                 streams: Streams) -> int:
    async with Runtime(agents=agents, store=url) as rt:
        print(f"openintent: worker {args.id or '(unnamed)'} serving {args.store} with "
              f"agents {', '.join(rt._agents.local_ids()) or '(none)'}", file=streams.err,
              flush=True)
        async with anyio.create_task_group() as group:
            group.start_soon(_stop_on_signals, group.cancel_scope, streams)
            await serve(rt._runs, rt._agents, rt._guardrails, rt._blocking_threshold,
                        args.concurrency, args.id, _rebuild(rt, streams))
    return EXIT_INTERRUPTED


async def _stop_on_signals(scope: anyio.CancelScope, streams: Streams) -> None:
    stack = contextlib.ExitStack()
    try:
        signals = stack.enter_context(anyio.open_signal_receiver(signal.SIGINT,
                                                                 signal.SIGTERM))
    except (NotImplementedError, ValueError, RuntimeError):
        return  # no signal handlers here: Ctrl-C raises KeyboardInterrupt
    with stack:
        async for _ in signals:
            print("\nopenintent: worker stopping", file=streams.err, flush=True)
            scope.cancel()
            return


def _rebuild(rt: Runtime, streams: Streams) -> Callable[[str], tuple[Any, Any]]:
    """How the worker rebuilds an adopted run started by ``openintent run``: from the
    workflow text its log holds (``--detach`` journals it: the file need not be on this
    host), else the workflow file its log names (its coordinator block and guardrails); a
    run started from code resumes from its log's plan and a registered coordinator."""

    def rebuild(run_id: str) -> tuple[Any, Any]:
        events = rt._runs.backend.read(run_id)
        started = next((data for type_, _t, _i, data in events
                        if type_ == EventType.RUN_STARTED), None) or {}
        origin = (started.get("plan") or {}).get("metadata") or {}
        path = origin.get("workflow_file")
        if path is None:
            return None, None
        text = origin.get("workflow_text")
        workflow = (load(str(path), streams) if text is None
                    else WorkflowSpec.from_string(str(text), str(path)))
        if workflow is None:
            raise OpenIntentError(f"run {run_id} was started from {path}, which this worker "
                                  "cannot load")
        kept = {key: origin[key] for key in ("workflow", *ORIGIN_KEYS) if key in origin}
        return CommandWorkflow(workflow, kept), None

    return rebuild


def detach_run(args: argparse.Namespace, streams: Streams, url: str, runnable: Any,
               agents: list[Any] | None, coordinator: Any) -> int:
    """``openintent run FILE --store URL --detach``: start the run, print its id, exit."""
    if not has_task_queue(url):
        return fail(streams, f"--detach hands the run to the workers of a postgresql:// store "
                    f"(`openintent worker STORE --agents MODULE`); {args.store} has no task "
                    "queue: use --store postgresql://USER@HOST/DB, or run it here without "
                    "--detach")

    async def main() -> int:
        async with Runtime(agents=agents, seed=args.seed, store=url) as rt:
            run_id = await start_detached(rt, runnable, coordinator, "openintent run --detach")
        print(run_id, file=streams.out, flush=True)
        print(f"openintent: run {run_id} is detached in {args.store}; a worker adopts it "
              f"(`openintent runs show {args.store} {run_id}`)", file=streams.err, flush=True)
        return EXIT_OK

    try:
        return anyio.run(main, backend="asyncio")
    except OpenIntentError as exc:
        return fail(streams, str(exc))
