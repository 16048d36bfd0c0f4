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
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._blocking import DEFAULT_BLOCKING_THRESHOLD, BlockingWatch, check_blocking_threshold
from ._clock import Clock, RealClock
from ._dispatch import AgentTable, BoundAgent
from ._graph import check_graph
from ._logging import logging_configured
from ._registry import HookKind, current_registry
from ._scheduler import Node, Run, fast_path
from ._specs import IntentSpec, PortfolioSpec
from ._store import EventStore, ResultsView
from .errors import AgentError, ApprovalError, OpenIntentError, SpecError
from .guardrails import ApprovalRequest, Guardrail, build_guardrails
from .models import Event, EventLog, EventType, Portfolio, RunResult, RunStatus, public_event

__all__ = ["Runtime"]


def _info(log: Any, message: str, **fields: Any) -> None:
    """An info line, only once the application has configured structlog.

    Like the standard library's logging, which shows a library's warnings but not its info
    lines until the application sets logging up: unconfigured structlog prints everything.
    """
    if logging_configured():
        log.info(message, **fields)


class Runtime:
    """Runs portfolios of intents with a set of agents, in this process.

    ``agents`` takes decorated classes (instantiated once, with no arguments) or instances;
    when omitted, agents are found by id in the default registry (every class decorated with
    ``@Agent``/``@Coordinator``). ``clock`` drives every timer of a run (default: real time);
    ``seed`` makes ids and retry jitter reproducible. ``blocking_threshold`` (seconds; ``None``
    turns it off) reports a step of an ``async def`` handler that holds the event loop longer:
    a ``loop_blocked`` event on its intent and a warning.

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
        blocking_threshold: float | None = DEFAULT_BLOCKING_THRESHOLD,
    ) -> None:
        if store != "memory://":
            raise OpenIntentError(
                f"store {store!r} is not supported yet; only 'memory://' (the default) is"
            )
        self._guardrails = build_guardrails(guardrails, "Runtime(...)")
        self._blocking_threshold = check_blocking_threshold(blocking_threshold)
        if isinstance(agents, str | type) or (
            agents is not None and not isinstance(agents, Iterable)
        ):
            raise AgentError(f"Runtime(agents=...) takes a list of agents, got {agents!r}")
        self._agents = AgentTable(list(agents) if agents is not None else None, current_registry())
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
        return await self._run(spec, self._coordinator(coordinator), nested=False)

    async def _run(
        self,
        spec: PortfolioSpec,
        lead: BoundAgent | None,
        *,
        nested: bool,
        on_event: Callable[[Event], None] | None = None,
        parent: Run | None = None,
    ) -> RunResult:
        check_graph(spec.name, spec.intents)
        guardrails = list(self._guardrails)
        if lead is not None:
            guardrails += build_guardrails(lead.definition.options.get("guardrails"),
                                           f"@Coordinator({lead.id!r})")
        run = self._prepare(spec, lead, guardrails, nested=nested)
        store = run.store
        run.parent = parent
        if self._blocking_threshold is not None:
            run.blocking = BlockingWatch(self._blocking_threshold, store.emit, store.log)
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

    def agent(self, agent_id: str) -> BoundAgent:
        """The bound agent for an id (runs use this to delegate and to add intents)."""
        return self._agents.get(agent_id)

    def assignees(self, spec: IntentSpec, lead: BoundAgent | None) -> tuple[BoundAgent, ...]:
        """The agents an intent goes to (its assignees, or the coordinator's routing)."""
        return self._assignees(spec, lead)

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

    def _coordinator(self, coordinator: Any) -> BoundAgent | None:
        if coordinator is None:
            return None
        lead = self._agents.resolve(coordinator)
        if lead.kind != "coordinator":
            raise AgentError(
                f"{lead.id!r} is an @Agent, not a @Coordinator; pass a class decorated with "
                "@Coordinator as rt.run(..., coordinator=...)"
            )
        return lead

    def _assignees(self, spec: IntentSpec, lead: BoundAgent | None) -> tuple[BoundAgent, ...]:
        where = f"intent {spec.title!r}"
        if spec.assign is None:
            if lead is None:
                raise SpecError(
                    f"{where} has no assign and the run has no coordinator to route it: "
                    "set IntentSpec(assign='agent-id') or pass coordinator=... to rt.run()"
                )
            if lead.of(HookKind.ASSIGNMENT):
                return (lead,)
            fan_out = lead.definition.options.get("agents")
            if not fan_out:
                raise SpecError(
                    f"{where} has no assign, and coordinator {lead.id!r} has neither an "
                    "@on_assignment handler nor agents=[...] to fan it out to"
                )
            ids: Sequence[str] = fan_out
        else:
            ids = spec.assignees
        return tuple(self._checked_agent(agent_id, where) for agent_id in ids)

    def _prepare(
        self,
        spec: PortfolioSpec,
        lead: BoundAgent | None,
        guardrails: list[Guardrail] | None = None,
        *,
        nested: bool = False,
    ) -> Run:
        rng = self._rng
        getrandbits = rng.getrandbits
        # Resolve every agent before anything is logged: a bad id is an error of the spec.
        per_intent, used, fallbacks = self._resolve_agents(spec, lead)
        store = EventStore(f"pf_{getrandbits(64):016x}", self._clock, spec.name)
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
        for index, intent_spec in enumerate(spec.intents):
            intent_id = f"in_{getrandbits(64):016x}"
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
            node.agents = per_intent[index]
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
        if lead is not None:
            used.setdefault(lead.id, lead)
        options = lead.definition.options if lead is not None else {}
        sequential = options.get("strategy") == "sequential"
        return Run(
            spec, nodes, store, self._clock, rng, lead, list(used.values()), fallbacks,
            1 if sequential else options.get("max_concurrency"), sequential, self, guardrails,
        )

    def _resolve_agents(
        self, spec: PortfolioSpec, lead: BoundAgent | None
    ) -> tuple[list[tuple[BoundAgent, ...]], dict[str, BoundAgent], dict[str, BoundAgent]]:
        """The agents of each intent, every agent used, and the fallback agents by id."""
        used: dict[str, BoundAgent] = {}
        fallbacks: dict[str, BoundAgent] = {}
        by_assign: dict[Any, tuple[BoundAgent, ...]] = {}  # most intents share an assign
        per_intent = []
        for intent_spec in spec.intents:
            agents = by_assign.get(intent_spec.assign)
            if agents is None:
                agents = by_assign[intent_spec.assign] = self._assignees(intent_spec, lead)
                used.update((agent.id, agent) for agent in agents)
            per_intent.append(agents)
            if len(agents) > 1:
                self._check_multi(intent_spec, agents, lead)
            for fallback_id in intent_spec.retry.fallback:
                if fallback_id not in fallbacks:
                    fallback = self._checked_agent(fallback_id, f"intent {intent_spec.title!r}")
                    fallbacks[fallback_id] = used[fallback_id] = fallback
        return per_intent, used, fallbacks

    @staticmethod
    def _check_multi(
        spec: IntentSpec, agents: tuple[BoundAgent, ...], lead: BoundAgent | None
    ) -> None:
        where = f"intent {spec.title!r}"
        if spec.retry.fallback:
            raise SpecError(
                f"{where} has {len(agents)} assignees and retry fallback agents; a fallback "
                "takes over from one agent, so give it to single-agent intents (a multi-agent "
                "intent retries with all its assignees)"
            )
        quorum = lead.of(HookKind.QUORUM) if lead is not None else []
        threshold = quorum[0].options["threshold"] if quorum else None
        if isinstance(threshold, int) and threshold > len(agents):
            raise SpecError(
                f"{where} has {len(agents)} assignees but the @on_quorum of coordinator "
                f"{lead.id if lead else ''!r} needs {threshold}; lower the threshold or assign "
                "more agents"
            )

    def _checked_agent(self, agent_id: str, where: str) -> BoundAgent:
        try:
            agent = self._agents.get(agent_id)
        except OpenIntentError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        if not agent.of(HookKind.ASSIGNMENT):
            raise AgentError(
                f"{where} is assigned to {agent_id!r}, but "
                f"{type(agent.instance).__qualname__} has no @on_assignment handler to do it"
            )
        return agent

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
