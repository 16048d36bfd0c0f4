"""The Runtime: wires agents, clock and event log together and runs portfolios.

Typical use (see ``examples/etl.py`` for the whole program)::

    async with Runtime(agents=[Extractor, Transformer, Loader]) as rt:
        result = await rt.run(workflow, coordinator=ETLCoordinator)
    result.raise_for_status()
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._clock import Clock, RealClock
from ._dispatch import AgentTable, BoundAgent
from ._plan import Plan, Planner, intent_id_prefix, new_portfolio_id
from ._registry import current_registry
from ._scheduler import Node, Run, fast_path
from ._specs import PortfolioSpec
from ._store import EventStore, ResultsView
from .errors import AgentError, ApprovalError, OpenIntentError, SpecError
from .guardrails import ApprovalRequest, build_guardrails
from .models import Event, EventLog, EventType, Portfolio, RunResult, RunStatus, public_event

__all__ = ["Runtime"]


def _info(log: Any, message: str, **fields: Any) -> None:
    """An info line, only once the application has configured structlog.

    Like the standard library's logging, which shows a library's warnings but not its info
    lines until the application sets logging up: unconfigured structlog prints everything.
    """
    if structlog.is_configured():
        log.info(message, **fields)


class Runtime:
    """Runs portfolios of intents with a set of agents, in this process.

    ``agents`` takes decorated classes (instantiated once, with no arguments) or instances;
    when omitted, agents are found by id in the default registry (every class decorated with
    ``@Agent``/``@Coordinator``). ``clock`` drives every timer of a run (default: real time);
    ``seed`` makes retry jitter, and so a run's events, reproducible (ids stay unique to
    each run).

    Use it as an async context manager; ``await rt.run(spec)`` may be called several times.
    """

    def __init__(
        self,
        agents: Iterable[Any] | None = None,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        store: str = "memory://",
        guardrails: Sequence[Any] | None = None,
    ) -> None:
        if store != "memory://":
            raise OpenIntentError(
                f"store {store!r} is not supported yet; only 'memory://' (the default) is"
            )
        self._guardrails = build_guardrails(guardrails, "Runtime(...)")
        if isinstance(agents, str | type) or (
            agents is not None and not isinstance(agents, Iterable)
        ):
            raise AgentError(f"Runtime(agents=...) takes a list of agents, got {agents!r}")
        table = AgentTable(list(agents) if agents is not None else None, current_registry())
        self._planner = Planner(table, self._guardrails)
        if clock is not None and not isinstance(clock, Clock):
            raise OpenIntentError(
                f"Runtime(clock=...) takes a clock with now(), async sleep(seconds) and "
                f"timeout(seconds), such as VirtualClock(); got {clock!r}"
            )
        self._clock: Clock = clock if clock is not None else RealClock()
        self._rng = random.Random(seed)
        self._subscribers: list[MemoryObjectSendStream[Event]] = []
        self._current: EventStore | None = None
        self._active: list[Run] = []
        self._closed = False

    @property
    def clock(self) -> Clock:
        """The clock every timer of this runtime's runs goes through."""
        return self._clock

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closed = True
        if not self._active:  # else the last run to finish closes the streams
            self._close_streams()

    def _close_streams(self) -> None:
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()

    # ------------------------------------------------------------------ running

    async def run(self, spec: PortfolioSpec, *, coordinator: Any = None) -> RunResult:
        """Run every intent of ``spec`` and return the result, whatever the outcome.

        Raises :class:`~openintent.errors.SpecError` (nothing runs) when the spec is invalid:
        duplicate titles, unknown dependencies, a cycle, unknown agent ids, bad guardrails;
        :class:`~openintent.errors.AgentError` for an agent without ``@on_assignment`` or a
        coordinator that is not one. Cancelling the call cancels every running handler,
        records the unfinished intents as cancelled, ends the log with ``run_finished``
        (``cancelled``) and re-raises the cancellation: no result is returned then.
        """
        if self._closed:
            raise OpenIntentError("this Runtime is closed; create a new one to run again")
        if not isinstance(spec, PortfolioSpec):
            raise SpecError(
                f"rt.run() takes a PortfolioSpec, got {type(spec).__name__}: build one with "
                "PortfolioSpec(name=..., intents=[IntentSpec(...), ...])"
            )
        return await self._run(spec, self._planner.coordinator(coordinator), nested=False)

    async def _run(
        self,
        spec: PortfolioSpec,
        lead: BoundAgent | None,
        *,
        nested: bool,
        on_event: Callable[[Event], None] | None = None,
        parent: Run | None = None,
    ) -> RunResult:
        run = self._prepare(self._planner.compile(spec, lead), nested=nested)
        store = run.store
        run.parent = parent
        if on_event is not None:
            store.listeners.append(on_event)
        self._active.append(run)
        if not nested:  # a sub-portfolio's events stay out of rt.events()
            self._current = store
        log = store.log
        _info(log, "run started", intents=len(run.nodes))
        results = ResultsView(store.records, run.id_of_title)
        outcome: dict[str, Any] = {"output": None, "error": None}

        async def finish() -> None:
            outcome["output"], outcome["error"] = await self._all_complete(run, spec, results)

        try:
            # A sub-portfolio (a coordinator's execute) does not fire @on_all_complete: it
            # fires once, for the portfolio the coordinator was given.
            status = await run.execute(None if nested else finish)
            output, error = outcome["output"], outcome["error"]
            if error is not None and status == RunStatus.COMPLETED:
                status = RunStatus.FAILED
        except anyio.get_cancelled_exc_class():
            # Also when the cancel lands in @on_all_complete: the log always gets its end.
            run.cancel_unfinished()
            self._finish(store, RunStatus.CANCELLED, nested=nested)
            _info(log, "run finished", status="cancelled")
            raise
        except BaseException:
            # An error of the runtime itself (never a handler's): still end the log, so
            # subscribers of rt.events() are not left waiting.
            run.cancel_unfinished()
            self._finish(store, RunStatus.FAILED, nested=nested)
            log.exception("run crashed")
            raise
        finally:
            self._active.remove(run)
        if run.halted is not None:
            error = f"the {run.halted.guardrail} guardrail halted the run: {run.halted.reason}"
        self._finish(store, status, nested=nested)
        _info(log, "run finished", status=str(status), cost_usd=store.total_cost)
        return RunResult(
            portfolio_id=store.portfolio_id,
            name=spec.name,
            status=status,
            output=output,
            intents=results,
            events=EventLog(store.events, store.portfolio_id),
            decisions=tuple(store.decisions),
            cost_usd=store.total_cost,
            error=error,
            breach=run.halted,
            errors=run.errors,
        )

    async def _all_complete(
        self, run: Run, spec: PortfolioSpec, results: ResultsView
    ) -> tuple[Any, str | None]:
        """Fire ``@on_all_complete``; return the output, or the error that replaced it."""
        store = run.store
        portfolio = Portfolio(store.portfolio_id, spec.name, spec.description, spec.metadata,
                              results)
        try:
            return await run.fire_all_complete(portfolio), None
        except Exception as exc:  # the work is done and kept; the run reports the failure
            run.errors[""] = exc
            store.emit(
                EventType.HOOK_FAILED,
                None,
                {"handler": "on_all_complete", "error": str(exc), "error_type": type(exc).__name__},
            )
            store.log.error("on_all_complete failed", exc_info=exc)
            return None, f"@on_all_complete raised {type(exc).__name__}: {exc}"

    def _finish(self, store: EventStore, status: RunStatus, *, nested: bool) -> None:
        store.emit(EventType.RUN_FINISHED, None, {"status": str(status)})
        if not nested:
            self._current = None
        if self._closed and not any(run.store is not store for run in self._active):
            self._close_streams()  # the runtime was left while this run went on

    # ------------------------------------------------------------------ the run's host

    @property
    def planner(self) -> Planner:
        """Checks specs against this runtime's agents (runs use it to add intents)."""
        return self._planner

    async def run_nested(
        self,
        spec: PortfolioSpec,
        lead: BoundAgent | None,
        on_event: Callable[[Event], None],
        parent: Run,
    ) -> RunResult:
        """Run a sub-portfolio for a coordinator's ``execute``; ``on_event`` hears its events.

        When ``parent`` halts, the sub-portfolio starts nothing new either.
        """
        if not isinstance(spec, PortfolioSpec):
            raise SpecError(f"execute() takes a PortfolioSpec, got {type(spec).__name__}")
        return await self._run(spec, lead, nested=True, on_event=on_event, parent=parent)

    def _prepare(self, plan: Plan, *, nested: bool = False) -> Run:
        """Log the plan's intents (``run_started``, then one ``created`` each) and wire the
        scheduler's nodes: nothing of a spec is logged before the whole of it checked out."""
        spec, lead = plan.spec, plan.coordinator
        portfolio_id = new_portfolio_id()
        store = EventStore(portfolio_id, self._clock, spec.name)
        if not nested:
            store.subscribers = self._subscribers
        store.emit(
            EventType.RUN_STARTED,
            None,
            {"name": spec.name, "intents": len(spec.intents), "coordinator": lead and lead.id},
        )
        nodes: list[Node] = []
        index_of: dict[str, int] = {}
        records = store.records
        emit = store.emit
        created = EventType.CREATED
        prefix = intent_id_prefix(portfolio_id)
        assignees = plan.assignees
        for index, intent_spec in enumerate(spec.intents):
            intent_id = f"{prefix}{index}"
            initial_state = intent_spec.initial_state
            emit(  # packed data: see models.PACKED_FIELDS
                created,
                intent_id,
                (
                    intent_spec.title,
                    intent_spec.depends_on,
                    intent_spec.assign,
                    # A copy, so the log never changes if the caller mutates the spec's dict.
                    {**initial_state} if initial_state else None,
                ),
            )
            node = records[intent_id]
            node.spec = intent_spec
            node.index = index
            node.agents = assignees[index]
            node.fast = fast_path(node.agents, intent_spec, lead)
            nodes.append(node)
            index_of[intent_spec.title] = index
        children: dict[int, list[int]] = {}
        for index, node in enumerate(nodes):
            depends_on = node.depends_on
            node.waiting = len(depends_on)
            for title in depends_on:
                parent = index_of[title]
                if parent in children:
                    children[parent].append(index)
                else:
                    children[parent] = [index]
        for parent, indices in children.items():
            nodes[parent].dependents = tuple(indices)  # a tuple of ints: untracked by the GC
        return Run(
            spec, nodes, store, self._clock, self._rng, lead, list(plan.agents),
            dict(plan.fallbacks), plan.max_concurrency, plan.sequential, self,
            list(plan.guardrails),
        )

    # ------------------------------------------------------------------ approvals

    def pending_approvals(self) -> list[ApprovalRequest]:
        """The approval requests waiting for a decision, across running portfolios."""
        return [
            request
            for run in self._active
            if run.guarding is not None
            for request in run.guarding.pending_approvals()
        ]

    async def approve(self, intent_id: str, *, by: str, note: str = "") -> ApprovalRequest:
        """Approve the pending request of ``intent_id``: the intent is dispatched.

        Raises :class:`~openintent.ApprovalError` (and changes nothing) when ``by`` is not an
        allowed approver, or the request is unknown or already decided.
        """
        return self._decide(intent_id, True, by, note)

    async def deny(self, intent_id: str, *, by: str, note: str = "") -> ApprovalRequest:
        """Deny the pending request of ``intent_id``: it fails without running and its
        dependents are skipped."""
        return self._decide(intent_id, False, by, note)

    def _decide(self, intent_id: str, approve: bool, by: str, note: str) -> ApprovalRequest:
        if not isinstance(by, str) or not by:
            raise ApprovalError("approve()/deny() need by='who decides'")
        for run in self._active:
            if run.guarding is not None:
                request = run.guarding.decide(intent_id, approve, by, note)
                if request is not None:
                    return request
        pending = self.pending_approvals()
        by_title = [request for request in pending if request.title == intent_id]
        if len(by_title) == 1:  # a title is as good as an id when it is unambiguous
            return self._decide(by_title[0].intent_id, approve, by, note)
        waiting = ", ".join(f"{request.intent_id} ({request.title!r})" for request in pending)
        raise ApprovalError(
            f"no approval request is pending for intent {intent_id!r}; pending: "
            f"{waiting or 'none'}"
        )

    # ------------------------------------------------------------------ observing

    def events(self) -> AsyncIterator[Event]:
        """Stream the events of the current (or next) run live, ending after it finishes
        (with several runs at once: after every run it saw start has finished).

        Subscribes at the call, and starts with the events the current run already logged, so
        nothing is missed however late the consumer starts.

        >>> async for event in rt.events():
        ...     print(event.type, event.intent_id)
        """
        send, receive = anyio.create_memory_object_stream[Event](math.inf)
        if self._current is not None:
            current = self._current
            for seq, raw in enumerate(current.events):
                send.send_nowait(public_event(raw, seq, current.portfolio_id))
        if self._closed:
            send.close()
        else:
            self._subscribers.append(send)
        return self._stream(send, receive)

    async def _stream(
        self, send: MemoryObjectSendStream[Event], receive: MemoryObjectReceiveStream[Event]
    ) -> AsyncIterator[Event]:
        running: set[str] = set()
        try:
            async with receive:
                async for event in receive:
                    yield event
                    if event.type == EventType.RUN_STARTED:
                        running.add(event.portfolio_id)
                    elif event.type == EventType.RUN_FINISHED:
                        running.discard(event.portfolio_id)
                        if not running:
                            return
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()
