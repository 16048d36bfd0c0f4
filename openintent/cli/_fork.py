"""``openintent runs fork STORE ID --rerun TITLE [FILE]``: a new run in STORE that keeps what
run ID completed and runs the named intents and their descendants again (``rt.fork``), with
the same progress, approvals and report as ``openintent run``."""

from __future__ import annotations

import argparse

import anyio

from .._handle import RunHandle
from ..errors import OpenIntentError
from ..runtime import Runtime
from ._common import EXIT_INVALID, Streams, fail
from ._origin import CommandWorkflow, JournaledAgents, origin_metadata
from ._resume import _journaled, journaled_workflow
from ._run import CommandRun, StartRun
from ._store_url import existing_store, explain

__all__ = ["fork_command"]


def fork_command(args: argparse.Namespace, streams: Streams) -> int:
    """Fork run ``args.id`` of ``args.store`` and return the new run's exit status."""
    try:
        url = existing_store(args.store)
        journaled = anyio.run(_journaled, url, args.id, backend="asyncio")
    except OpenIntentError as exc:
        return fail(streams, explain(exc, args.store))
    origin = journaled.metadata
    found, workflow = journaled_workflow(
        args, origin, streams, "the fork runs that workflow",
        f"openintent runs fork {args.store} {args.id} --rerun TITLE FILE")
    if not found:
        return EXIT_INVALID
    try:
        agents = JournaledAgents.of(
            args, origin, workflow,
            f"openintent runs fork {args.store} {args.id} --rerun TITLE FILE")
    except OpenIntentError as exc:
        return fail(streams, str(exc))

    def prepare() -> tuple[Runtime, StartRun]:
        chosen, coordinator = agents.chosen(workflow)
        runtime = Runtime(agents=chosen, store=url)
        # The workflow file, when there is one, is the fork's plan (an edited prompt of a
        # re-run step comes along); the fork notes where it came from as `run` does.
        spec = None if workflow is None else CommandWorkflow(
            workflow, origin_metadata(workflow, agents.simulate, agents.references))

        async def start(rt: Runtime) -> RunHandle:
            return await rt.start_fork(args.id, args.rerun, spec=spec,
                                       coordinator=coordinator)

        return runtime, start

    return CommandRun(args, streams, args.store, prepare).execute()
