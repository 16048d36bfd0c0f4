"""Beginning and ending the runs of one runtime: a plan becomes a :class:`Run` with its log.

:class:`Launcher` compiles a spec into a plan, opens the run's event log (``run_started``,
then one ``created`` per intent), wires the bus, the nodes and the blocking watch into a
:class:`~openintent._scheduler.Run`, keeps the runs going on now, and logs ``run_finished``
when one ends. It is what a run asks of its runtime (the ``RuntimePort``: the planner, and
running a coordinator's sub-portfolio). The public facade is :class:`openintent.Runtime`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.to_thread
import attrs
import structlog

from ._blocking import BlockingWatch
from ._bus import EventBus
from ._clock import Clock
from ._dispatch import BoundAgent
from ._guardrail_core import Guardrail
from ._handle import drive_run
from ._inbox import InboxWatch
from ._json_data import json_data
from ._logging import logging_configured
from ._nodes import Node, plant
from ._plan import Plan, Planner, new_portfolio_id
from ._plan_data import plan_data
from ._ports import Stoppable
from ._scheduler import Run
from ._specs import PortfolioSpec
from ._store import EventStore
from ._stores import EventBackend
from .errors import DataError, RunInUseError, SpecError, StoreError
from .models import Event, EventType, RunResult, RunStatus

__all__ = ["Launcher", "run_fence"]

#: Set by a client's ``run_portfolio`` while it opens its run: why a completion may not be
#: applied (its caller's lease was lost), else ``None`` (see ``Run.complete``).
run_fence: ContextVar[Callable[[], str | None] | None] = ContextVar(
    "openintent_run_fence", default=None)


def _info(log: Any, message: str, **fields: Any) -> None:
    """An info line, only once the application has configured structlog.

    Like the standard library's logging, which shows a library's warnings but not its info
    lines until the application sets logging up: unconfigured structlog prints everything.
    """
    if logging_configured():
        log.info(message, **fields)


def lease_holder(call: str) -> str:
    """A name for a run's lease holder: the call, a random tag and this process's id."""
    return f"{call} {os.urandom(4).hex()} (pid {os.getpid()})"


def release_lease(backend: EventBackend, run_id: str, holder: str, log: Any) -> None:
    """Give a run's lease back; a failure is logged (the lease then expires by itself)."""
    try:
        backend.release_run(run_id, holder)
    except StoreError as exc:
        log.error("giving back the run's lease failed", error=str(exc))


class Launcher:
    """Begins, drives and ends the runs of one runtime, and knows which are going on."""

    def __init__(
        self,
        backend: EventBackend,
        planner: Planner,
        clock: Clock,
        rng: random.Random,
        blocking_threshold: float | None,
    ) -> None:
        self.backend = backend
        self._planner = planner
        self._clock = clock
        self._rng = rng
        self._blocking_threshold = blocking_threshold
        self.active: list[Run] = []  # the runs going on now, nested ones included
        self.latest: EventStore | None = None  # the log of the latest top-level run
        self._runtime_left = False  # then the last run to end closes the backend
        # Who holds the lease of each top-level run going on with a durable store.
        self._holders: dict[Run, str] = {}

    @property
    def clock(self) -> Clock:
        """The clock every timer of this runtime's runs goes through."""
        return self._clock

    @property
    def planner(self) -> Planner:
        """Checks specs against this runtime's agents (runs use it to add intents)."""
        return self._planner

    def begin(
        self,
        spec: PortfolioSpec,
        coordinator: BoundAgent | None,
        *,
        nested: bool,
        on_event: Callable[[Event], None] | None = None,
        parent: Stoppable | None = None,
        extra_guardrails: tuple[Guardrail, ...] = (),
    ) -> Run:
        """Validate a run and log its start (``run_started``, then one ``created`` per
        intent); :meth:`drive` runs it. Nothing of a spec is logged before the whole of it
        checked out."""
        plan = self._planner.compile(spec, coordinator)
        if extra_guardrails:
            plan = attrs.evolve(plan, guardrails=plan.guardrails + extra_guardrails)
        store, holder = self.open_log(plan, "rt.run()", nested=nested, parent=parent)
        nodes = plant(plan, store)
        run = self.assemble(plan, store, nodes, nested=nested, on_event=on_event, parent=parent)
        if holder is not None:
            self.hold(run, holder)
        elif nested and self.backend.durable:  # under its parent's lease: only the inbox
            watch = self._inbox_watch(run)
            if watch is not None:
                run.keep_lease = watch.serve
        _info(store.logger, "run started", intents=len(nodes))
        return run

    def open_log(
        self,
        plan: Plan,
        call: str,
        *,
        nested: bool = False,
        parent: Stoppable | None = None,
        started: dict[str, Any] | None = None,
    ) -> tuple[EventStore, str | None]:
        """The log of a new run of ``plan``, begun with its ``run_started`` (``started``
        adds to its data: a fork's origin), and who holds the run's lease in a durable store
        (``None``: no lease)."""
        spec, coordinator = plan.spec, plan.coordinator
        # A sub-portfolio's events stay out of rt.events().
        store = self._new_store(spec.name, nested, parent)
        holder = None
        if not nested and self.backend.durable:
            # Another process must not resume a run going on here: it holds the run's lease.
            holder = lease_holder(call)
            self.backend.acquire_run(store.portfolio_id, holder)
        store.append(
            EventType.RUN_STARTED,
            None,
            {"name": spec.name, "intents": len(spec.intents),
             "coordinator": coordinator and coordinator.id, "plan": plan_data(plan),
             **(started or {})},
        )
        return store, holder

    def hold(self, run: Run, holder: str) -> None:
        """``holder`` holds ``run``'s lease in the store: renew it while the run goes on, give
        it back when :meth:`drive` ends."""
        self._holders[run] = holder
        watch = self._inbox_watch(run)
        run.keep_lease = lambda: self._keep_lease(run.portfolio_id, holder, watch)

    def _inbox_watch(self, run: Run) -> InboxWatch | None:
        """What applies the decisions other processes send to ``run``'s approvals through
        the store's inbox (``openintent approve``): for a run that may ask for approval in
        a store that has an inbox."""
        inbox = getattr(self.backend, "inbox", None)
        if inbox is None or run.guardrails is None or not run.guardrails.asks_approval:
            return None
        return InboxWatch(run, inbox)

    async def _keep_lease(self, run_id: str, holder: str, watch: InboxWatch | None) -> None:
        """Renew a run's lease well before it expires (commits renew it too), so a run that
        waits long (for an approval, say) keeps it. On real time whatever the run's clock:
        a lease is between processes. The holder applies the decisions sent to the run's
        approvals from other processes too (``watch``)."""
        if watch is not None:
            async with anyio.create_task_group() as both:
                both.start_soon(watch.serve)
                await self._keep_lease(run_id, holder, None)
        period = float(getattr(self.backend, "lease_ttl", 60.0)) / 3
        while True:
            # A cancel scope's deadline, not a sleep: a virtual clock still jumps meanwhile.
            with anyio.move_on_after(period):
                await anyio.Event().wait()
            try:  # the holder again: renewed
                if getattr(self.backend, "thread_safe", False):
                    # A database call that retries through a server restart: off the loop.
                    await anyio.to_thread.run_sync(self.backend.acquire_run, run_id, holder)
                else:
                    self.backend.acquire_run(run_id, holder)
            except RunInUseError as exc:
                # Another process took the run over (this one hung past the lease's TTL):
                # stop, writing nothing more (its commits would be refused anyway).
                structlog.get_logger("openintent").error(
                    "run lease lost to another process; this run stops", run_id=run_id,
                    error=str(exc))
                raise

    def assemble(
        self,
        plan: Plan,
        store: EventStore,
        nodes: list[Node],
        *,
        nested: bool = False,
        on_event: Callable[[Event], None] | None = None,
        parent: Stoppable | None = None,
        settled: int = 0,
    ) -> Run:
        """Build the :class:`Run` of ``plan`` over its log (``store``) and its wired
        ``nodes``, and count it as going on. :meth:`begin` builds a new run with it; a resume
        builds one from a log (``settled``: how many of its intents already ended)."""
        bus = EventBus(store)
        watch = None
        if self._blocking_threshold is not None:
            watch = BlockingWatch(self._blocking_threshold,
                                  lambda *event: bus.emit(*event), store.logger)
        run = Run(plan, bus, nodes, self._clock, self._rng, self, parent=parent, watch=watch,
                  settled=settled)
        if on_event is not None:
            bus.observe(on_event)
        self.active.append(run)
        if not nested:
            self.latest = store
            run.fence = run_fence.get()
        return run

    def _new_store(self, name: str, nested: bool, parent: Stoppable | None) -> EventStore:
        """The log of a new run, under an id the store does not hold yet."""
        for tries_left in range(2, -1, -1):
            try:
                return EventStore(self.backend, new_portfolio_id(), self._clock, name,
                                  record_type=Node, publish=not nested,
                                  parent=parent.portfolio_id if parent is not None else None)
            except ValueError:  # the store already holds a run of that id: draw another
                if not tries_left:
                    raise
        raise AssertionError("unreachable")

    async def drive(self, run: Run, *, nested: bool) -> RunResult:
        """Run a begun run to its end and return its result (a cancellation propagates);
        then give its lease back (its end is committed by then)."""
        try:
            return await drive_run(run, nested=nested, end=self._end)
        finally:
            holder = self._holders.pop(run, None)
            if holder is not None:
                release_lease(self.backend, run.portfolio_id, holder, run.store.logger)

    def _end(self, run: Run, status: RunStatus, output: Any, error: str | None) -> None:
        """A run ended: log ``run_finished`` (once the run left the active ones) with its
        status, and its ``error`` and ``output`` unless ``None`` (the output only when it is
        JSON data): a loaded run has them too."""
        self.active.remove(run)
        store = run.store
        finished: dict[str, Any] = {"status": str(status)}
        if error is not None:
            finished["error"] = error
        if output is not None:
            try:
                finished["output"] = json_data(output, "the run's output")
            except DataError:
                pass  # not JSON data: only the live result has it
        run.bus.emit(EventType.RUN_FINISHED, None, finished)
        _info(store.logger, "run finished", status=str(status), cost_usd=store.total_cost)
        if self._runtime_left and not self.active:
            self.backend.close()  # the runtime was left while this run went on

    def close(self) -> None:
        """The runtime was left: close the event backend (its streams end) now, or when the
        last run going on ends."""
        self._runtime_left = True
        if not self.active:
            self.backend.close()

    async def run_nested(
        self,
        spec: PortfolioSpec,
        coordinator: BoundAgent | None,
        on_event: Callable[[Event], None],
        parent: Stoppable,
    ) -> RunResult:
        """Run a sub-portfolio for a coordinator's ``execute``; ``on_event`` hears its events.

        When ``parent`` halts, the sub-portfolio starts nothing new either.
        """
        if not isinstance(spec, PortfolioSpec):
            raise SpecError(f"execute() takes a PortfolioSpec, got {type(spec).__name__}")
        run = self.begin(spec, coordinator, nested=True, on_event=on_event, parent=parent)
        return await self.drive(run, nested=True)
