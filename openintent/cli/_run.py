"""``openintent run FILE``: run a workflow in this process, show how it goes, report."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

import anyio

from .._handle import RunHandle
from .._workflow_run import with_simulated_agents
from ..console import follow
from ..errors import OpenIntentError
from ..models import RunResult, RunStatus
from ..runtime import Runtime
from ..workflow import WorkflowSpec
from ._agents import import_agents
from ._approvals import ApprovalPolicy, answer_approvals
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, Streams, fail
from ._loading import load
from ._parser import default_approver

__all__ = ["run_command"]

SUPPORTED_STORES = ("memory://",)


def run_command(args: argparse.Namespace, streams: Streams) -> int:
    """Run ``args.file`` and return the exit status."""
    if args.store not in SUPPORTED_STORES:
        return fail(
            streams,
            f"--store {args.store}: only memory:// is available yet (durable sqlite:// and "
            "postgresql:// stores come in a later release); leave --store out to run in memory",
        )
    workflow = load(args.file, streams)
    if workflow is None:
        return EXIT_INVALID
    try:
        agents = import_agents(args.agents)
    except OpenIntentError as exc:
        return fail(streams, str(exc))
    run = _CommandRun(args, streams, workflow, agents)
    try:
        return anyio.run(run.main, backend="asyncio")
    except KeyboardInterrupt:  # before the signal handler was in place, or after the run
        status = run.result.status if run.result is not None else RunStatus.CANCELLED
        print(f"status: {status} (interrupted)", file=streams.out, flush=True)
        return EXIT_INTERRUPTED


class _CommandRun:
    """One ``openintent run``: its options, and whether Ctrl-C stopped it."""

    def __init__(
        self,
        args: argparse.Namespace,
        streams: Streams,
        workflow: WorkflowSpec,
        agents: list[Any] | None,
    ) -> None:
        self.args = args
        self.streams = streams
        self.workflow = workflow
        self.agents = agents
        self.interrupted = False
        self.unanswered: list[str] = []  # approvals nobody could decide
        self.result: RunResult | None = None  # once the run has ended

    async def main(self) -> int:
        streams = self.streams
        try:
            runtime, spec, coordinator = self._prepare()
        except OpenIntentError as exc:
            return fail(streams, str(exc))
        async with runtime as rt:
            try:
                handle = await rt.start(spec, coordinator=coordinator)
            except OpenIntentError as exc:
                return fail(streams, str(exc))
            self.result = await self._follow(handle)
        return self._report(self.result)

    def _prepare(self) -> tuple[Runtime, WorkflowSpec, Any]:
        """The runtime and the coordinator to run the workflow with, as ``wf.arun`` picks
        them: ``--simulate`` adds a simulated agent for every agent id not given with
        ``--agents MODULE:ATTR``, and a registered coordinator of the workflow's id governs."""
        workflow = self.workflow
        agents, coordinator = self.agents, None
        if self.args.simulate:
            agents, coordinator = with_simulated_agents(
                workflow.phases, workflow.coordinator, self.agents)
        return Runtime(agents=agents, seed=self.args.seed), workflow, coordinator

    async def _follow(self, handle: RunHandle) -> RunResult:
        streams, args = self.streams, self.args
        policy = ApprovalPolicy(
            handle,
            approve_all=args.approve_all,
            by=args.by or default_approver(),
            ask=_terminal_prompt(streams) if streams.interactive else None,
            err=streams.err,
        )
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(self._watch_interrupts, handle)
            if args.json:  # stdout is for the JSON alone
                async with anyio.create_task_group() as approvals:
                    approvals.start_soon(answer_approvals, handle, policy)
                    result = await handle.result()
            else:  # live progress (rich on a terminal), then the summary and decisions
                result = await follow(handle, file=streams.out, on_approval=policy)
            self.unanswered = policy.unanswered
            watchers.cancel_scope.cancel()
        return result

    async def _watch_interrupts(self, handle: RunHandle) -> None:
        """Ctrl-C cancels the run cleanly (its handlers' ``finally:`` blocks run, the log ends
        ``cancelled``); the command then reports it and exits 130."""
        stack = contextlib.ExitStack()
        try:
            signals = stack.enter_context(anyio.open_signal_receiver(signal.SIGINT))
        except (NotImplementedError, ValueError, RuntimeError):
            # No signal handlers here (Windows, or not the main thread): Ctrl-C raises
            # KeyboardInterrupt instead, which run_command turns into exit 130.
            return
        with stack:
            async for _ in signals:
                if not self.interrupted:
                    self.interrupted = True
                    print("\nopenintent: interrupted; cancelling the run...",
                          file=self.streams.err, flush=True)
                    await handle.cancel()

    def _report(self, result: RunResult) -> int:
        streams = self.streams
        reason = None
        if self.interrupted:
            reason = "interrupted"
        elif self.unanswered:
            reason = "waiting for approval: " + ", ".join(map(repr, self.unanswered))
        if self.args.json:
            try:
                print(json.dumps(result.to_dict(), indent=2, default=str), file=streams.out)
                streams.out.flush()
            finally:  # also when stdout's reader went away
                print_status(result, streams.err, reason)
        else:
            print_status(result, streams.out, reason)
        streams.out.flush()
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if result.status == RunStatus.COMPLETED else EXIT_FAILED


def _terminal_prompt(streams: Streams) -> Callable[[str], str]:
    """Ask on stderr, read the answer from stdin (both a terminal)."""

    def ask(prompt: str) -> str:
        streams.err.write(prompt)
        streams.err.flush()
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line

    return ask


def print_status(result: RunResult, out: TextIO, reason: str | None = None) -> None:
    """The last line of every run: its final status, and why when it did not complete."""
    line = f"status: {result.status}"
    if reason:
        line += f" ({reason})"
    elif result.error:
        line += f" ({result.error})"
    elif result.failed_intents:
        failed = result.failed_intents[0]
        line += f" ({failed.title!r} failed: {failed.error_type}: {failed.error})"
    print(line, file=out)
