"""``openintent run FILE``: run a workflow in this process, show how it goes, report.

:class:`CommandRun` is what ``openintent resume`` shares with it."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

import anyio

from .._handle import RunHandle
from .._workflow_run import with_simulated_agents
from ..console import follow
from ..errors import OpenIntentError
from ..models import RunResult, RunStatus
from ..runtime import Runtime
from ._agents import import_agents
from ._approvals import ApprovalPolicy, answer_approvals
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, Streams, fail
from ._loading import load
from ._origin import CommandWorkflow, origin_metadata
from ._parser import default_approver
from ._store_url import is_durable, store_url

__all__ = ["CommandRun", "StartRun", "print_status", "run_command"]

StartRun = Callable[[Runtime], Awaitable[RunHandle]]
"""Starts the command's run in the open runtime (``rt.start`` or ``rt.start_resume``)."""


def run_command(args: argparse.Namespace, streams: Streams) -> int:
    """Run ``args.file`` and return the exit status."""
    workflow = load(args.file, streams)
    if workflow is None:
        return EXIT_INVALID
    try:
        agents = import_agents(args.agents)
    except OpenIntentError as exc:
        return fail(streams, str(exc))
    url = store_url(args.store)
    runnable = CommandWorkflow(workflow, origin_metadata(workflow, args.simulate, args.agents,
                                                         text=args.detach)
                               if is_durable(url) else {})
    if args.detach:
        from ._worker import detach_run

        if args.simulate:
            return fail(streams, "--detach hands the run to the store's workers, which run "
                        "the agents they import (openintent worker STORE --agents MODULE); "
                        "--simulate has no agents there: drop one of the two")
        return detach_run(args, streams, url, runnable, agents, None)

    def prepare() -> tuple[Runtime, StartRun]:
        chosen, coordinator = agents, None
        if args.simulate:
            chosen, coordinator = with_simulated_agents(
                workflow.phases, workflow.coordinator, agents)
        runtime = Runtime(agents=chosen, seed=args.seed, store=url)

        async def start(rt: Runtime) -> RunHandle:
            return await rt.start(runnable, coordinator=coordinator)

        return runtime, start

    return CommandRun(args, streams, args.store, prepare).execute()


class CommandRun:
    """One run of a command (``openintent run``, ``openintent resume``): its options, live
    progress, approvals, report, and whether Ctrl-C stopped it.

    ``prepare()`` makes the runtime and says how to start the run in it; ``store`` is the
    STORE argument as given (for the ``openintent resume`` hint).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        streams: Streams,
        store: str,
        prepare: Callable[[], tuple[Runtime, StartRun]],
    ) -> None:
        self.args = args
        self.streams = streams
        self.store = store
        self.durable = is_durable(store_url(store))
        self.prepare = prepare
        self.interrupted = False
        self.unanswered: list[str] = []  # approvals nobody could decide
        self.portfolio_id: str | None = None  # once started
        self.result: RunResult | None = None  # once the run has ended

    def execute(self) -> int:
        """Run it in a new event loop; return the exit status."""
        try:
            return anyio.run(self.main, backend="asyncio")
        except KeyboardInterrupt:  # before the signal handler was in place, or after the run
            status = self.result.status if self.result is not None else RunStatus.CANCELLED
            print(f"status: {status} (interrupted)", file=self.streams.out, flush=True)
            self._resume_hint(status)
            return EXIT_INTERRUPTED

    async def main(self) -> int:
        streams = self.streams
        if getattr(self.args, "wait_approvals", False) and not self.durable:
            return fail(streams, "--wait-approvals waits for decisions from other processes "
                        "(openintent approve), which need a durable store: add --store "
                        "sqlite:///runs.db")
        try:
            runtime, start = self.prepare()
        except OpenIntentError as exc:
            return fail(streams, str(exc))
        async with runtime as rt:
            try:
                handle = await start(rt)
            except OpenIntentError as exc:
                return fail(streams, str(exc))
            self.portfolio_id = handle.portfolio_id
            if self.durable:
                print(f"openintent: run {handle.portfolio_id} ({handle.name!r}) is journaled "
                      f"in {self.store}", file=streams.err, flush=True)
            self.result = await self._follow(handle)
        return self._report(self.result)

    def resume_command(self) -> str:
        """The command that continues this run."""
        return f"openintent resume {self.store} {self.portfolio_id}"

    async def _follow(self, handle: RunHandle) -> RunResult:
        streams, args = self.streams, self.args
        policy = ApprovalPolicy(
            handle,
            approve_all=args.approve_all,
            by=args.by or default_approver(),
            ask=_terminal_prompt(streams) if streams.interactive else None,
            err=streams.err,
            resume=self.resume_command() if self.durable else None,
            elsewhere=(f"openintent approve {self.store} {self.portfolio_id}"
                       if self.durable and getattr(args, "wait_approvals", False) else None),
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
            # KeyboardInterrupt instead, which execute() turns into exit 130.
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
        self._resume_hint(result.status)
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if result.status == RunStatus.COMPLETED else EXIT_FAILED

    def _resume_hint(self, status: str) -> None:
        """How to continue a journaled run that stopped before its end (a failed run is
        over: resuming it runs nothing)."""
        if not self.durable or self.portfolio_id is None or status in (
                RunStatus.COMPLETED, RunStatus.FAILED):
            return
        approve = " --approve-all" if self.unanswered else ""
        print(f"openintent: run {self.portfolio_id} is {status}; continue it with: "
              f"{self.resume_command()}{approve}", file=self.streams.err, flush=True)


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
