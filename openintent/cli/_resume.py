"""``openintent resume STORE ID [FILE]``: continue a journaled run in this process, with the
same progress, approvals and report as ``openintent run``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import anyio

from .._handle import RunHandle
from .._workflow_run import with_simulated_agents
from ..errors import OpenIntentError
from ..runtime import Runtime
from ..workflow import WorkflowSpec
from ._agents import import_agents
from ._common import EXIT_INVALID, Streams, fail
from ._loading import load
from ._origin import ORIGIN_KEYS, CommandWorkflow
from ._run import CommandRun, StartRun
from ._store_url import existing_store

__all__ = ["resume_command"]


def resume_command(args: argparse.Namespace, streams: Streams) -> int:
    """Resume run ``args.id`` of ``args.store`` and return the exit status."""
    try:
        url = existing_store(args.store)
        origin = anyio.run(_origin, url, args.id, backend="asyncio")
    except OpenIntentError as exc:
        return fail(streams, str(exc))
    path = args.file or origin.get("workflow_file")
    workflow: WorkflowSpec | None = None
    if path is not None:
        if args.file is None:
            print(f"openintent: run {args.id} was started from {path}; resuming with it",
                  file=streams.err, flush=True)
        workflow = load(str(path), streams)
        if workflow is None:
            if args.file is None:
                fail(streams, f"cannot rebuild run {args.id} from its workflow file; give the "
                     f"file: openintent resume {args.store} {args.id} FILE")
            return EXIT_INVALID
    simulate = bool(args.simulate or origin.get("simulate"))
    if args.simulate and workflow is None:
        return fail(streams, f"--simulate needs the run's workflow file, and run {args.id} "
                    f"did not journal one: openintent resume {args.store} {args.id} FILE "
                    "--simulate")
    references = args.agents or list(origin.get("agents") or ())
    try:
        agents = import_agents(references)
    except OpenIntentError as exc:
        return fail(streams, str(exc))

    def prepare() -> tuple[Runtime, StartRun]:
        chosen, coordinator = agents, None
        if simulate and workflow is not None:
            chosen, coordinator = with_simulated_agents(
                workflow.phases, workflow.coordinator, agents)
        runtime = Runtime(agents=chosen, store=url)
        spec: CommandWorkflow | None = None
        if workflow is not None:
            # How the run was started is kept as it was journaled, whatever this resume's
            # options: only a change of the workflow itself is a mismatch.
            kept = {key: origin[key] for key in ("workflow", *ORIGIN_KEYS) if key in origin}
            spec = CommandWorkflow(workflow, kept)

        async def start(rt: Runtime) -> RunHandle:
            return await rt.start_resume(args.id, spec, coordinator=coordinator)

        return runtime, start

    return CommandRun(args, streams, args.store, prepare).execute()


async def _origin(url: str, portfolio_id: str) -> Mapping[str, Any]:
    """The run's spec metadata as journaled (where ``openintent run`` notes its origin)."""
    async with Runtime(store=url) as rt:
        result = await rt.load(portfolio_id)
    for event in result.events:
        if event.type == "run_started":
            plan = (event.data or {}).get("plan") or {}
            metadata = plan.get("metadata") if isinstance(plan, Mapping) else None
            return metadata if isinstance(metadata, Mapping) else {}
    return {}
