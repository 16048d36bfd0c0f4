"""The runtime's durable-run methods: resuming, standing by, forking, settling effects in
doubt, and reading runs back (:class:`~openintent.Runtime` inherits them; the work is done
in :mod:`._resume`, :mod:`._standby`, :mod:`._fork`, :mod:`._resolve` and
:mod:`._readback`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from ._fork import open_fork
from ._handle import RunHandle, StartedRuns, not_open_error
from ._launch import Launcher
from ._readback import list_runs, load_run
from ._resolve import UNSET, resolve_effect
from ._resume import Resumption, open_resumption
from ._specs import PortfolioSpec
from ._standby import stand_by
from ._stores import RunInfo
from ._workflow_port import RunnableWorkflow
from .errors import OpenIntentError
from .models import EffectRecord, RunResult

__all__ = ["DurableRuns"]


class DurableRuns:
    """The durable-run methods of :class:`~openintent.Runtime` (see the module docstring)."""

    _runs: Launcher
    _started: StartedRuns | None
    _closed: bool

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
        return self._start_in_group("rt.start_resume()", lambda: self._resumption(
            "rt.start_resume()", portfolio_id, spec, coordinator, guardrails))

    def _resumption(
        self, call: str, portfolio_id: str, spec: PortfolioSpec | RunnableWorkflow | None,
        coordinator: Any, guardrails: Sequence[Any] | None,
    ) -> Resumption:
        self._check_open(call)
        return open_resumption(self._runs, portfolio_id, spec, coordinator, guardrails)

    def _check_open(self, call: str) -> None:
        if self._closed:
            raise OpenIntentError(
                f"this Runtime is closed, so {call} cannot run: create a new Runtime"
            )

    def _start_in_group(self, call: str, open_run: Callable[[], Resumption]) -> RunHandle:
        """Open a resumption (``open_run``) and drive it in the runtime's task group."""
        if self._started is None and not self._closed:
            raise not_open_error(call)
        handle = open_run().handle()
        assert self._started is not None
        self._started.start(handle)
        return handle

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
        return self._start_in_group("rt.start_fork()", lambda: self._fork(
            "rt.start_fork()", portfolio_id, rerun, spec, coordinator, guardrails))

    def _fork(
        self, call: str, portfolio_id: str, rerun: Sequence[str],
        spec: PortfolioSpec | RunnableWorkflow | None, coordinator: Any,
        guardrails: Sequence[Any] | None,
    ) -> Resumption:
        self._check_open(call)
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
