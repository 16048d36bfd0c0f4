"""The Runtime: wires agents, clock and event log together and runs portfolios.

Typical use (see ``examples/etl.py`` for the whole program)::

    async with Runtime(agents=[Extractor, Transformer, Loader]) as rt:
        result = await rt.run(workflow, coordinator=ETLCoordinator)
    result.raise_for_status()

``rt.start(spec)`` returns a :class:`~openintent.RunHandle` instead (see :mod:`._handle`).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from ._blocking import DEFAULT_BLOCKING_THRESHOLD, check_blocking_threshold
from ._clock import Clock, RealClock
from ._dispatch import AgentTable
from ._fork import open_fork
from ._guardrail_core import Guardrail
from ._handle import RunHandle, StartedRuns, decide_approval, not_open_error, pending_approvals
from ._launch import Launcher
from ._plan import Planner
from ._readback import list_runs, load_run
from ._registry import current_registry
from ._resolve import UNSET, resolve_effect
from ._resume import Resumption, open_resumption
from ._scheduler import Run
from ._specs import PortfolioSpec
from ._standby import stand_by
from ._stores import RunInfo, open_backend
from ._streams import follow_run, follow_runs
from ._workflow_port import RunnableWorkflow
from .errors import AgentError, OpenIntentError, SpecError
from .guardrails import ApprovalRequest, build_guardrails
from .models import EffectRecord, Event, RunResult

__all__ = ["Runtime"]


class Runtime:
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
        self._runs = Launcher(open_backend(store), Planner(table, self._guardrails),
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

    # ------------------------------------------------------------------ resuming

    async def resume(
        self,
        portfolio_id: str,
        spec: PortfolioSpec | RunnableWorkflow | None = None,
        *,
        coordinator: Any = None,
        guardrails: Sequence[Any] | None = None,
    ) -> RunResult:
        """Continue the run ``portfolio_id`` of this runtime's store from its log, with this
        runtime's agents, and return its result (the whole log is its ``events``).

        Completed intents are not run again; intents that were in flight when the log ended
        (a crash, a halt, a cancel) are dispatched again with the next attempt number, even
        past ``max_attempts``; approvals still pending are asked again; attempts, spend,
        budget warnings, approvals granted, decisions and the run's time (a run timeout's
        deadline: the time the run was stopped does not count) carry over; the ``seq`` of its
        events goes on. A run that completed or failed is not run again: its result comes
        back and nothing is written. A halted or cancelled run continues where it stopped;
        ``guardrails`` (as ``Runtime(guardrails=...)`` takes them) replace the run's own,
        e.g. a raised budget. ``spec`` and ``coordinator`` are optional (the log has the
        plan); given, they must be the ones the run was journaled with.

        Raises :class:`~openintent.errors.RunNotFoundError` for an id the store does not hold,
        :class:`~openintent.errors.ResumeMismatchError` (with the differences, nothing
        written) for another spec or coordinator, :class:`~openintent.errors.RunInUseError`
        while the run is going on or being resumed by someone else (the run's lease).

        >>> result = await rt.resume(halted.portfolio_id, guardrails=[{"type": "budget",
        ...                                                           "max_cost_usd": 20}])

        .. versionadded:: 0.2
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        resumption = self._resumption("rt.resume()", portfolio_id, spec, coordinator, guardrails)
        return await resumption.drive()

    async def standby(
        self,
        portfolio_id: str,
        spec: PortfolioSpec | RunnableWorkflow | None = None,
        *,
        coordinator: Any = None,
        guardrails: Sequence[Any] | None = None,
    ) -> RunResult:
        """Stand by for the run ``portfolio_id`` going on in another process, and go on with
        it (as :meth:`resume`) once that process died (at once) or stopped renewing its
        lease (after the store's lease TTL), with a ``coordinator_failed_over`` event and a
        runtime's decision; its result at once if it ended meanwhile. (New in 0.2.)"""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise OpenIntentError("this Runtime is closed: create a new Runtime to stand by")
        taken = await stand_by(self._runs, portfolio_id, spec, coordinator, guardrails)
        return taken if isinstance(taken, RunResult) else await taken.drive()

    async def start_resume(
        self,
        portfolio_id: str,
        spec: PortfolioSpec | RunnableWorkflow | None = None,
        *,
        coordinator: Any = None,
        guardrails: Sequence[Any] | None = None,
    ) -> RunHandle:
        """:meth:`resume` in the runtime's task group: the run's :class:`~openintent.RunHandle`
        at once (as :meth:`start`; needs ``async with Runtime(...) as rt:``). The errors of
        :meth:`resume` raise from here, and nothing runs then.

        .. versionadded:: 0.2
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._started is None and not self._closed:
            raise not_open_error("rt.start_resume()")
        resumption = self._resumption("rt.start_resume()", portfolio_id, spec, coordinator,
                                      guardrails)
        assert self._started is not None
        handle = resumption.handle()
        self._started.start(handle)
        return handle

    def _resumption(
        self, call: str, portfolio_id: str, spec: PortfolioSpec | RunnableWorkflow | None,
        coordinator: Any, guardrails: Sequence[Any] | None,
    ) -> Resumption:
        if self._closed:
            raise OpenIntentError(
                f"this Runtime is closed, so {call} cannot run: create a new Runtime"
            )
        return open_resumption(self._runs, portfolio_id, spec, coordinator, guardrails)

    # ------------------------------------------------------------------ forking

    async def fork(
        self,
        portfolio_id: str,
        rerun: Sequence[str],
        *,
        spec: PortfolioSpec | RunnableWorkflow | None = None,
        coordinator: Any = None,
        guardrails: Sequence[Any] | None = None,
    ) -> RunResult:
        """Run again, as a new run in this runtime's store, the intents ``rerun`` names and
        their descendants, keeping what run ``portfolio_id`` completed of the rest; return
        the new run's result. Use: step 5 of 8 gave a bad answer; redo it (and 6-8) without
        paying for 1-4 again.

        The source run may have ended in any way or never have finished (a crash), and is
        left as it is. In the fork (its ``run_started`` data names ``forked_from`` and
        ``rerun``), each intent not downstream of ``rerun`` that the source completed is
        *copied*: an ``intent_copied`` event makes it ``completed`` with the source's final
        state, version, attempts, agent and completed side effects (``self.effect``: they
        never run again), and it is never dispatched. Every other intent
        runs from its spec, with a first attempt: the named ones, their descendants, and the
        intents the source did not complete (failed, skipped, cancelled, unfinished) with
        theirs. The fork's ``cost_usd`` (and a copied intent's) counts only what the fork
        spends; the source's decisions and approvals are not copied.

        ``spec`` replaces the source's plan (read from its log by default), e.g. with a
        better prompt for the re-run step: intents it adds run, and a copied intent's spec
        must be the source's (:class:`~openintent.errors.SpecError` otherwise). The
        coordinator and guardrails are the source's unless given. Raises
        :class:`~openintent.errors.SpecError` (nothing runs) for an empty ``rerun`` or an
        unknown title (with a "did you mean"), :class:`~openintent.RunNotFoundError` for an
        id the store does not hold, :class:`~openintent.errors.RunInUseError` while the
        source is going on in this runtime.

        >>> fixed = await rt.fork(result.portfolio_id, rerun=["Review"])

        .. versionadded:: 0.3
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        forked = self._fork("rt.fork()", portfolio_id, rerun, spec, coordinator, guardrails)
        return await forked.drive()

    async def start_fork(
        self,
        portfolio_id: str,
        rerun: Sequence[str],
        *,
        spec: PortfolioSpec | RunnableWorkflow | None = None,
        coordinator: Any = None,
        guardrails: Sequence[Any] | None = None,
    ) -> RunHandle:
        """:meth:`fork` in the runtime's task group: the new run's
        :class:`~openintent.RunHandle` at once (as :meth:`start`; needs ``async with
        Runtime(...) as rt:``). The errors of :meth:`fork` raise from here, and nothing runs
        then.

        .. versionadded:: 0.3
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._started is None and not self._closed:
            raise not_open_error("rt.start_fork()")
        forked = self._fork("rt.start_fork()", portfolio_id, rerun, spec, coordinator,
                            guardrails)
        assert self._started is not None
        handle = forked.handle()
        self._started.start(handle)
        return handle

    def _fork(
        self, call: str, portfolio_id: str, rerun: Sequence[str],
        spec: PortfolioSpec | RunnableWorkflow | None, coordinator: Any,
        guardrails: Sequence[Any] | None,
    ) -> Resumption:
        if self._closed:
            raise OpenIntentError(
                f"this Runtime is closed, so {call} cannot run: create a new Runtime"
            )
        return open_fork(self._runs, portfolio_id, rerun, spec, coordinator, guardrails, call)

    async def resolve_effect(
        self,
        portfolio_id: str,
        intent: str,
        name: str,
        *,
        value: Any = UNSET,
        happened: bool | None = None,
    ) -> EffectRecord:
        """Settle a side effect in doubt (``self.effect``: it started and never finished, so
        its intent failed with :class:`~openintent.errors.EffectInDoubtError`) once you
        found out what became of it: ``value=...`` (it happened and returned that, JSON
        data: the effect returns it from now on, never called again) or ``happened=False``
        (it did not: it is called again). ``intent`` is the intent's title or id.

        Holding the run's lease, one ``effect_resolved`` event is appended to the run's
        log; an intent that failed in doubt is reopened with the dependents its failure
        skipped, so the next :meth:`resume` dispatches it again. Returns the effect's
        record. Raises :class:`~openintent.RunNotFoundError` for an unknown run,
        :class:`~openintent.errors.RunInUseError` while the run goes on, and
        :class:`~openintent.OpenIntentError` for an unknown intent or effect, or one that is
        not in doubt.

        >>> await rt.resolve_effect(run_id, "Pay", "charge-card", value={"charge": "ch_1"})
        >>> result = await rt.resume(run_id)

        .. versionadded:: 0.3
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise OpenIntentError("this Runtime is closed, so rt.resolve_effect() cannot "
                                  "reach its store: create a new Runtime")
        return await resolve_effect(self._runs, portfolio_id, intent, name, value, happened)

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

    # ------------------------------------------------------------------ reading back

    def runs(self) -> list[RunInfo]:
        """The top-level runs of this runtime's store, oldest first: each one's
        ``portfolio_id``, ``name``, ``status`` (``running`` while its log has no end) and
        when it started and ended. (A ``memory://`` store holds a run while its result or
        handle is held; a sub-portfolio a coordinator ran is not listed: load it by id.)

        .. versionadded:: 0.2
        """
        return list_runs(self._runs.backend)

    async def load(self, portfolio_id: str) -> RunResult:
        """Any run of this runtime's store, finished or not, as a
        :class:`~openintent.models.RunResult` rebuilt from its event log.

        For a finished run it equals what the live run returned: intents (status, state,
        version, attempts, assignee, error, cost), decisions, ``cost_usd``, events (the same
        ``seq``, ``type``, ``time``, ``at``, ``intent_id`` and ``data``), ``output`` (when it
        was JSON data), ``error``, ``breach`` and ``status``. A run still going on (or whose
        process died) loads with status ``running`` and what it has so far. A loaded run has
        no exceptions: ``raise_for_status()`` raises without the handlers' exceptions as
        causes. :class:`~openintent.RunNotFoundError` for an id the store does not hold.

        >>> result = await rt.load(rt.runs()[-1].portfolio_id)

        .. versionadded:: 0.2
        """
        await anyio.lowlevel.checkpoint()
        return load_run(self._runs.backend, portfolio_id)

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
