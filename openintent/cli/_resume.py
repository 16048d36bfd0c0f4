"""``openintent resume STORE ID [FILE]``: continue a journaled run in this process, with the
same progress, approvals and report as ``openintent run``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

import anyio
import attrs

from .._data import to_plain
from .._guardrail_core import Guardrail, build_guardrails
from .._handle import RunHandle
from .._registry import current_registry
from .._workflow_run import step_guardrails
from ..errors import OpenIntentError
from ..models import EventType, RunResult, RunStatus
from ..runtime import Runtime
from ..workflow import WorkflowSpec
from ._common import EXIT_INVALID, Streams, fail
from ._loading import load
from ._origin import ORIGIN_KEYS, CommandWorkflow, JournaledAgents
from ._run import CommandRun, StartRun
from ._runs import report_ended
from ._store_url import existing_store, explain

__all__ = ["resume_command"]


def resume_command(args: argparse.Namespace, streams: Streams) -> int:
    """Resume run ``args.id`` of ``args.store`` and return the exit status."""
    try:
        url = existing_store(args.store)
        journaled = anyio.run(_journaled, url, args.id, backend="asyncio")
    except OpenIntentError as exc:
        return fail(streams, explain(exc, args.store))
    ended = journaled.result
    if ended.status in (RunStatus.COMPLETED, RunStatus.FAILED):
        # Over for good: resuming it would run nothing, so it is only reported.
        print(f"openintent: run {args.id} has {ended.status}; nothing to resume",
              file=streams.err, flush=True)
        return report_ended(ended, args.json, streams)
    origin = journaled.metadata
    found, workflow = journaled_workflow(args, origin, streams, "resuming with it",
                                         f"openintent resume {args.store} {args.id} FILE")
    if not found:
        return EXIT_INVALID
    try:
        agents = JournaledAgents.of(args, origin, workflow,
                                    f"openintent resume {args.store} {args.id} FILE")
    except OpenIntentError as exc:
        return fail(streams, str(exc))

    def prepare() -> tuple[Runtime, StartRun]:
        chosen, coordinator = agents.chosen(workflow)
        runtime = Runtime(agents=chosen, store=url)
        spec: CommandWorkflow | None = None
        guardrails: list[Guardrail] | None = None
        if workflow is not None:
            # How the run was started is kept as it was journaled, whatever this resume's
            # options: only a change of the workflow itself is a mismatch.
            kept = {key: origin[key] for key in ("workflow", *ORIGIN_KEYS) if key in origin}
            spec = CommandWorkflow(workflow, kept)
            guardrails = _new_guardrails(workflow, chosen, coordinator, journaled.guardrails)
            if guardrails is not None:
                print(f"openintent: the guardrails of {workflow.source_name} differ from the "
                      f"run's; it continues with the file's: "
                      f"{_canonical([rail.to_data() for rail in guardrails])}",
                      file=streams.err, flush=True)

        async def start(rt: Runtime) -> RunHandle:
            return await rt.start_resume(args.id, spec, coordinator=coordinator,
                                         guardrails=guardrails)

        return runtime, start

    return CommandRun(args, streams, args.store, prepare).execute()


def journaled_workflow(
    args: argparse.Namespace, origin: Mapping[str, Any], streams: Streams, doing: str,
    usage: str,
) -> tuple[bool, WorkflowSpec | None]:
    """The run's workflow: FILE, else the file the run was started from (said on stderr,
    with ``doing``), else none (a run started from Python code); ``(False, None)`` once a
    problem is printed (``usage``: the command line that gives the file)."""
    path = args.file or origin.get("workflow_file")
    if path is None:
        return True, None
    if args.file is None:
        print(f"openintent: run {args.id} was started from {path}; {doing}",
              file=streams.err, flush=True)
    workflow = load(str(path), streams)
    if workflow is None and args.file is None:
        fail(streams, f"cannot rebuild run {args.id} from its workflow file; give the file: "
             f"{usage}")
    return workflow is not None, workflow


@attrs.frozen
class _Journaled:
    """What the journal says of a run: its spec metadata (where ``openintent run`` notes its
    origin) and the guardrail settings it runs with now (as data)."""

    metadata: Mapping[str, Any]
    guardrails: list[Any]
    result: RunResult


async def _journaled(url: str, portfolio_id: str) -> _Journaled:
    async with Runtime(store=url) as rt:
        result = await rt.load(portfolio_id)
    metadata: Mapping[str, Any] = {}
    guardrails: list[Any] = []
    for event in result.events:
        data = event.data or {}
        if event.type == EventType.RUN_STARTED:
            plan = data.get("plan") or {}
            metadata = plan.get("metadata") or {}
            guardrails = list(plan.get("guardrails") or ())
        elif event.type == "run_resumed" and "guardrails" in data:
            guardrails = list(data["guardrails"])
    return _Journaled(metadata, to_plain(guardrails), result)


def _new_guardrails(
    workflow: WorkflowSpec, agents: list[Any] | None, coordinator: Any, journaled: list[Any]
) -> list[Guardrail] | None:
    """The workflow file's guardrails when they differ from the journaled ones (a budget
    raised in the file after a halt, say), so the resumed run takes them; ``None`` when they
    are the same, or when a coordinator of code (not the file's ``coordinator:`` block)
    governs the run: its guardrails are its own."""
    config = workflow.coordinator
    if coordinator is not None or (config is not None and _registered(config.id, agents)):
        return None
    rails = list(build_guardrails(list(config.guardrails) if config is not None else [],
                                  f"{workflow.source_name}: coordinator"))
    rails += step_guardrails(workflow.name, workflow.phases)
    if _canonical([rail.to_data() for rail in rails]) == _canonical(journaled):
        return None
    return rails


def _registered(agent_id: str, agents: list[Any] | None) -> bool:
    """Whether the runtime will have an agent (a coordinator of code) of ``agent_id``."""
    if agents is not None:
        return any(getattr(agent, "__openintent_id__", None) == agent_id for agent in agents)
    return agent_id in current_registry()


def _canonical(data: Any) -> str:
    return json.dumps(to_plain(data), sort_keys=True, default=str)
