"""The Runtime: wires agents, clock and event log together and runs portfolios.

Typical use (see ``examples/etl.py`` for the whole program)::

    async with Runtime(agents=[Extractor, Transformer, Loader]) as rt:
        result = await rt.run(workflow, coordinator=ETLCoordinator)
    result.raise_for_status()

``rt.start(spec)`` returns a :class:`~openintent.RunHandle` instead (see :mod:`._handle`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from ._blocking import DEFAULT_BLOCKING_THRESHOLD, check_blocking_threshold
from ._clock import Clock, RealClock
from ._dispatch import AgentTable
from ._guardrail_core import Guardrail
from ._handle import RunHandle, StartedRuns, decide_approval, not_open_error, pending_approvals
from ._launch import Launcher
from ._plan import Planner
from ._registry import current_registry
from ._remote import remote_definition
from ._runtime_durable import DurableRuns
from ._scheduler import Run
from ._specs import PortfolioSpec
from ._stores import open_backend
from ._streams import follow_run, follow_runs
from ._workflow_port import RunnableWorkflow
from .errors import AgentError, OpenIntentError, SpecError
from .guardrails import ApprovalRequest, build_guardrails
from .models import Event, RunResult

__all__ = ["Runtime"]


class Runtime(DurableRuns):
    """Runs portfolios of intents with a set of agents, in this process.

    ``agents`` takes decorated classes (instantiated once, with no arguments) or instances;
    when omitted, agents are found by id in the default registry (every class decorated with
    ``@Agent``/``@Coordinator``). ``clock`` drives every timer of a run (default: real time);
    ``seed`` makes retry jitter, and so a run's events, reproducible (ids stay unique to
    each run). ``blocking_threshold`` (seconds; ``None`` turns it off) reports a step of an
    ``async def`` handler that holds the event loop longer: a ``loop_blocked`` event on its
    intent and a warning.

    Use it as an async context manager: ``await rt.run(spec)`` (any number of times) runs a
    portfolio in the calling task; ``await rt.start(spec)`` starts one in the runtime's own
    task group and returns a :class:`~openintent.RunHandle`. Leaving the block waits for the
    runs it started; an exception in the block cancels them and reaches the caller as itself.
    """

    def __init__(
        self,
        agents: Iterable[Any] | None = None,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        store: str = "memory://",
        guardrails: Sequence[Any] | None = None,
        blocking_threshold: float | None = DEFAULT_BLOCKING_THRESHOLD,
    ) -> None:
        self._guardrails = build_guardrails(guardrails, "Runtime(...)")
        self._blocking_threshold = check_blocking_threshold(blocking_threshold)
        if isinstance(agents, str | type) or (
            agents is not None and not isinstance(agents, Iterable)
        ):
            raise AgentError(f"Runtime(agents=...) takes a list of agents, got {agents!r}")
        table = AgentTable(list(agents) if agents is not None else None, current_registry())
        if clock is not None and not isinstance(clock, Clock):
            raise OpenIntentError(
                f"Runtime(clock=...) takes a clock with now(), async sleep(seconds) and "
                f"timeout(seconds), such as VirtualClock(); got {clock!r}"
            )
        self._clock: Clock = clock if clock is not None else RealClock()
        backend = open_backend(store)
        self._agents = table
        tasks = getattr(backend, "tasks", None)
        if tasks is not None:  # agents this process has not got are remote (openintent._remote)
            attach = getattr(tasks, "attach", None)
            if attach is not None:
                attach(self._clock)
            table.remote = functools.partial(remote_definition, queue=tasks)
        self._runs = Launcher(backend, Planner(table, self._guardrails),
                              self._clock, random.Random(seed), self._blocking_threshold)
        self._started: StartedRuns | None = None  # runs started with start(), while open
        self._closed = False

    @property
    def clock(self) -> Clock:
        """The clock every timer of this runtime's runs goes through."""
        return self._clock

    async def __aenter__(self) -> Runtime:
        if self._started is not None or self._closed:
            raise OpenIntentError(
                "this Runtime was already entered with `async with`; a Runtime is used in one "
                "`async with` block: create a new one for another"
            )
        self._started = await StartedRuns.open()
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._closed = True
        started, self._started = self._started, None
        try:
            if started is not None:  # wait for the runs started in the block (cancel on error)
                await started.close(cancel=exc is not None)
        finally:
            self._runs.close()  # event streams end once no run goes on

    # ------------------------------------------------------------------ running

    async def serve(self, concurrency: int = 8, worker_id: str | None = None) -> None:
        """Work for the runs of this runtime's store until cancelled: claim the tasks of the
        agents this runtime has (``agents=[...]``, else every registered ``@Agent``), run
        them (at most ``concurrency`` at once) and finish them; and adopt the runs that need
        a coordinator (detached ones, or those whose coordinator died) when this runtime has
        their coordinator, dispatching their intents to the store's workers. ``worker_id``
        names this worker (default: host, pid and a random tag); a worker restarted under
        the same id lets its earlier claims go at once. Needs a store with a task queue
        (``postgresql://``, or ``memory://?workers=1`` within one process).

        >>> async with Runtime(agents=[Summarizer], store="postgresql://host/db") as rt:
        ...     await rt.serve(concurrency=4)

        .. versionadded:: 0.4
        """
        from ._serve import serve

        self._check_open("rt.serve()")
        await serve(self._runs, self._agents, self._guardrails, self._blocking_threshold,
                    concurrency, worker_id)

    async def run(
        self, spec: PortfolioSpec | RunnableWorkflow, *, coordinator: Any = None
    ) -> RunResult:
        """Run every intent of ``spec`` in the calling task and return the result, whatever
        the outcome (``rt.start`` + ``handle.result()``, without the need for ``async with``).
        ``spec`` may be a YAML :class:`~openintent.workflow.WorkflowSpec`: its
        ``coordinator:`` block governs the run unless ``coordinator`` is given or a
        ``@Coordinator`` of that id is registered.

        Raises :class:`~openintent.errors.SpecError` (nothing runs) when the spec is invalid:
        duplicate titles, unknown dependencies, a cycle, unknown agent ids, bad guardrails;
        :class:`~openintent.errors.AgentError` for an agent without ``@on_assignment`` or a
        coordinator that is not one. Cancelling the call cancels every running handler,
        records the unfinished intents as cancelled, ends the log with ``run_finished``
        (``cancelled``) and re-raises the cancellation: no result is returned then.
        """
        run = self._open("rt.run()", spec, coordinator)
        return await self._runs.drive(run, nested=False)

    async def start(
        self, spec: PortfolioSpec | RunnableWorkflow, *, coordinator: Any = None
    ) -> RunHandle:
        """Start running ``spec`` in the runtime's task group and return its
        :class:`~openintent.RunHandle` at once.

        The run is validated first, so the errors of :meth:`run` raise from here and nothing
        runs. Needs ``async with Runtime(...) as rt:`` (:class:`~openintent.OpenIntentError`
        otherwise); leaving that block waits for the run.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._started is None and not self._closed:
            raise not_open_error("rt.start()")
        run = self._open("rt.start()", spec, coordinator)  # a closed runtime says so here
        assert self._started is not None
        handle = RunHandle(run, lambda: self._runs.drive(run, nested=False))
        self._started.start(handle)
        return handle

    def _open(
        self, call: str, spec: PortfolioSpec | RunnableWorkflow, coordinator: Any
    ) -> Run:
        """Validate a top-level run and log its start."""
        if self._closed:
            raise OpenIntentError(
                f"this Runtime is closed, so {call} cannot run: create a new Runtime"
            )
        extra: tuple[Guardrail, ...] = ()
        if not isinstance(spec, PortfolioSpec) and isinstance(spec, RunnableWorkflow):
            # A YAML WorkflowSpec: its coordinator block and step guardrails come along.
            spec, coordinator, extra = spec.bind_runtime(self._runs.planner, coordinator)
        if not isinstance(spec, PortfolioSpec):
            raise SpecError(
                f"{call} takes a PortfolioSpec or a WorkflowSpec, got {type(spec).__name__}: "
                "build one with PortfolioSpec(name=..., intents=[IntentSpec(...), ...]) or "
                "openintent.workflow.load_workflow(path)"
            )
        return self._runs.begin(spec, self._runs.planner.coordinator(coordinator),
                                nested=False, extra_guardrails=extra)

    # ------------------------------------------------------------------ approvals

    def pending_approvals(self) -> list[ApprovalRequest]:
        """The approval requests waiting for a decision, across running portfolios."""
        return pending_approvals(self._runs.active)

    async def approve(self, intent_id: str, *, by: str, note: str = "") -> ApprovalRequest:
        """Approve the pending request of ``intent_id`` (or of an unambiguous title): the
        intent is dispatched. ``handle.approve`` does the same within one run.

        Raises :class:`~openintent.ApprovalError` (and changes nothing) when ``by`` is not an
        allowed approver, or the request is unknown or already decided.
        """
        return decide_approval(list(self._runs.active), intent_id, True, by, note)

    async def deny(self, intent_id: str, *, by: str, note: str = "") -> ApprovalRequest:
        """Deny the pending request of ``intent_id`` (or of an unambiguous title): it fails
        without running (``attempts == 0``) and its dependents are skipped."""
        return decide_approval(list(self._runs.active), intent_id, False, by, note)

    # ------------------------------------------------------------------ observing

    def events(self) -> AsyncIterator[Event]:
        """Stream the events of this runtime's current run live, from its ``run_started``,
        ending after its ``run_finished``.

        Which run: the runs going on now (with several at once, the stream also takes runs
        that start meanwhile, and ends once all of them finished); when none is going on,
        the latest run, replayed at once; before the first run, the next one to start, while
        the runtime is open (once closed, the stream ends at once). For one particular run,
        use ``handle.events()`` of :meth:`start`.

        >>> async for event in rt.events():
        ...     print(event.type, event.intent_id)
        """
        runs = self._runs
        running = [run.store for run in runs.active if run.parent is None]
        if not running and (runs.latest is not None or self._closed):
            return follow_run(runs.latest)  # never waits: that run has ended
        return follow_runs(running, runs.backend)
