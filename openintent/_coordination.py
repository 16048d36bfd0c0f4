"""What coordinators do inside a run: route, delegate, vote, arbitrate, take escalations,
record decisions and extend the plan.

A :class:`CoordinatorSession` sees its run through the :class:`~openintent._ports.CoordinatedRun`
port; the attempts at an intent call it for intents routed to the coordinator, for multi-agent
intents and for escalations, and the coordinator's methods (``delegate``, ``record_decision``,
``add_intent``, ``execute``) reach it through the run context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._data import FrozenList, to_plain
from ._dispatch import BoundAgent, call_handler
from ._json_data import json_data, json_state
from ._nodes import Node
from ._plan import decision_id
from ._ports import CoordinatedRun, RuntimePort
from ._quorum import quorum_needed, quorum_rationale
from ._registry import HookKind, suggest
from .errors import (
    AgentError,
    DelegationError,
    Escalate,
    EscalationError,
    OpenIntentError,
    QuorumError,
    ResponseConflictError,
)
from .models import Decision, Event, EventType, Intent, Response

if TYPE_CHECKING:
    from ._specs import IntentSpec, PortfolioSpec
    from .models import RunResult

__all__ = ["RUNTIME", "CoordinatorSession", "decision_data"]

#: ``coordinator_id`` of decisions the runtime records on a coordinator's behalf.
RUNTIME = "runtime"


def decision_data(decision: Any, data: Mapping[str, Any]) -> Any:
    """``record_decision``'s checks, wherever it is called (a run, a worker): ``decision`` a
    non-empty string, ``data`` JSON data; returns a checked deep copy of ``data`` (the audit
    log must not change when the caller's objects do)."""
    if not isinstance(decision, str) or not decision:
        raise ValueError(f"record_decision needs a non-empty decision string, got {decision!r}")
    return json_data(data, f"record_decision({decision!r}) data")


class CoordinatorSession:
    """The runtime's side of a coordinator's work in one run."""

    def __init__(self, run: CoordinatedRun, runtime: RuntimePort) -> None:
        self.run = run
        self.runtime = runtime
        self.coordinator = run.coordinator
        # Results of delegate() calls while a coordinator handler runs, keyed by the identity
        # of the intent view it was given: several assignees of one intent may escalate at once.
        self._delegated: dict[int, list[dict[str, Any] | None]] = {}
        self._escalating: set[int] = set()

    def _handlers(self, kind: HookKind) -> list[Any]:
        return self.coordinator.handlers_of(kind) if self.coordinator is not None else []

    # ------------------------------------------------------------------ routing, delegation

    async def route(self, intent: Intent) -> dict[str, Any] | None:
        """Run the coordinator's ``@on_assignment`` for an intent it was given."""
        assert self.coordinator is not None
        self._delegated[id(intent)] = []
        try:
            own = await self.run.call_agent(self.coordinator, intent)
        finally:
            delegated = self._delegated.pop(id(intent))
        return _merge_delegated(own, delegated)

    async def delegate(self, coordinator_id: str, intent: Intent, to: str) -> Any:
        """Hand ``intent`` to agent ``to`` (see ``CoordinatorMethods.delegate``)."""
        coordinator = self.coordinator
        if coordinator is None or coordinator_id != coordinator.id:
            raise DelegationError(
                f"{coordinator_id!r} cannot delegate {intent.title!r}: only the coordinator "
                "of the running portfolio delegates its intents"
            )
        if id(intent) not in self._delegated:
            raise DelegationError(
                f"delegate({intent.title!r}) is only possible from the coordinator's "
                "@on_assignment or @on_escalation handler while it handles that intent"
            )
        team = coordinator.definition.options.get("agents")
        if team and to not in team and id(intent) not in self._escalating:
            raise DelegationError(
                f"{coordinator.id!r} cannot delegate {intent.title!r} to {to!r}: it is not "
                f"one of its agents {list(team)}{suggest(to, list(team))}; add it to "
                f"@Coordinator({coordinator.id!r}, agents=[...])"
            )
        try:
            agent = self.runtime.planner.agent(to)
        except OpenIntentError as exc:
            raise DelegationError(f"cannot delegate {intent.title!r}: {exc}") from None
        if not agent.handlers_of(HookKind.ASSIGNMENT):
            raise DelegationError(
                f"cannot delegate {intent.title!r} to {to!r}: "
                f"{type(agent.instance).__qualname__} has no @on_assignment handler"
            )
        run = self.run
        run.learn_agent(agent)
        node = run.node(intent.id)
        handoff: dict[str, Any] = {"from": coordinator_id, "to": to}
        if len(node.agents) > 1:
            # One assignee's part of a multi-agent intent: the intent stays with its assignees.
            handoff["for"] = intent.assigned_to
        run.bus.emit(EventType.HANDOFF, intent.id, handoff)
        view = run.views.of(node, intent.attempt, to)
        for handler in agent.handlers_of(HookKind.HANDOFF):
            await call_handler(handler, view, coordinator_id, clock=run.clock)
        result = await run.call_agent(agent, view)
        self._delegated[id(intent)].append(result)
        return result

    # ------------------------------------------------------------------ escalation

    async def escalate(self, intent: Intent, escalation: Escalate) -> dict[str, Any] | None:
        """Give an escalated intent to the coordinator's ``@on_escalation``."""
        run = self.run
        reason = escalation.reason or "no reason given"
        run.bus.emit(EventType.ESCALATED, intent.id,
                     {"reason": reason, "agent": intent.assigned_to})
        handlers = self._handlers(HookKind.ESCALATION)
        if not handlers:
            raise EscalationError(
                f"intent {intent.title!r} was escalated ({reason}) and no @on_escalation "
                "handler took it; give the coordinator an @on_escalation handler",
                reason=reason,
            )
        self._delegated[id(intent)] = []
        self._escalating.add(id(intent))
        own: Any = None
        try:
            for handler in handlers:
                own = await call_handler(handler, intent, reason, clock=run.clock)
        except Escalate as again:
            raise EscalationError(
                f"the @on_escalation handler of intent {intent.title!r} escalated again "
                f"({again.reason or reason}); resolve it there, or fail it by raising",
                reason=again.reason or reason,
            ) from None
        finally:
            delegated = self._delegated.pop(id(intent))
            self._escalating.discard(id(intent))
        if delegated or own is not None:
            return _merge_delegated(_as_dict(own, "@on_escalation"), delegated)
        raise EscalationError(
            f"intent {intent.title!r} was escalated ({reason}); the @on_escalation handler "
            "neither delegated it nor returned a result",
            reason=reason,
        )

    # ------------------------------------------------------------------ multi-agent intents

    async def attempt_many(
        self, node: Node, agents: tuple[BoundAgent, ...], intent: Intent
    ) -> dict[str, Any] | None:
        """Dispatch to every assignee at once; settle by quorum, agreement or arbitration."""
        run = self.run
        quorum = self._handlers(HookKind.QUORUM)
        threshold = quorum[0].options["threshold"] if quorum else None
        needed = len(agents) if threshold is None else quorum_needed(threshold, len(agents))
        if needed > len(agents):
            raise QuorumError(
                f"intent {intent.title!r} has {len(agents)} assignee(s) but @on_quorum needs "
                f"{needed}; lower the threshold or assign more agents"
            )
        responses: list[Response] = []
        failures: list[tuple[str, Exception]] = []

        async def respond(agent: BoundAgent) -> None:
            # A task that had not started when the vote (or the run) was cancelled must not
            # start its work now.
            await anyio.lowlevel.checkpoint_if_cancelled()
            view = run.views.of(node, intent.attempt, agent.id)
            try:
                try:
                    answer = await run.call_agent(agent, view)
                except Escalate as escalation:
                    # One assignee escalates its own part: whatever @on_escalation settles
                    # (a senior's answer, say) counts as that assignee's response.
                    answer = await self.escalate(view, escalation)
            except Exception as exc:
                failures.append((agent.id, exc))
                if not quorum or len(agents) - len(failures) < needed:
                    tg.cancel_scope.cancel()  # the outcome is settled: stop the others
                return
            response = Response(answer, agent.id, node.version)
            responses.append(response)
            run.bus.emit(EventType.RESPONSE, node.id,
                         {"agent": agent.id, "response": to_plain(answer) if answer else None})
            if quorum and len(responses) >= needed:
                tg.cancel_scope.cancel()  # quorum reached: the rest are not needed

        async with anyio.create_task_group() as tg:
            for agent in agents:
                tg.start_soon(respond, agent)
        if quorum:
            return await self._settle_quorum(node, intent, responses, failures, needed)
        if failures:
            raise failures[0][1]
        return await self._settle_answers(node, intent, responses)

    async def _settle_quorum(
        self,
        node: Node,
        intent: Intent,
        responses: list[Response],
        failures: list[tuple[str, Exception]],
        needed: int,
    ) -> dict[str, Any] | None:
        if len(responses) < needed:
            detail = "; ".join(f"{agent}: {type(exc).__name__}: {exc}" for agent, exc in failures)
            raise QuorumError(
                f"intent {intent.title!r} cannot reach its quorum of {needed}: only "
                f"{len(responses)} answered and {len(failures)} failed ({detail})"
            )
        votes = responses[:needed]
        handler = self._handlers(HookKind.QUORUM)[0]
        rationale = quorum_rationale(handler.options["threshold"], len(node.agents))
        self.record_decision(
            RUNTIME, node.id, "quorum_reached", rationale,
            {"agents": [response.agent_id for response in votes]},
        )
        value = await call_handler(handler, intent, votes, clock=self.run.clock)
        return _as_dict(value, handler.name)

    async def _settle_answers(
        self, node: Node, intent: Intent, responses: list[Response]
    ) -> dict[str, Any] | None:
        if len({_freeze(response) for response in responses}) <= 1:
            self.record_decision(
                RUNTIME, node.id, "responses_agreed",
                f"all {len(responses)} assignees returned the same result",
                {"agents": [response.agent_id for response in responses]},
            )
            return responses[0].to_plain() if responses and responses[0] else None
        handlers = self._handlers(HookKind.CONFLICT)
        if not handlers:
            detail = "; ".join(f"{response.agent_id}: {dict(response)!r}"
                               for response in sorted(responses, key=lambda r: r.agent_id))
            raise ResponseConflictError(
                f"the assignees of intent {intent.title!r} disagree ({detail}); give the "
                "coordinator an @on_conflict or @on_quorum handler to decide"
            )
        value = await call_handler(handlers[0], intent, list(responses), clock=self.run.clock)
        return _as_dict(value, handlers[0].name)

    async def resolve_patch_conflict(
        self, intent: Intent, patch: Mapping[str, Any], expected_version: int
    ) -> Mapping[str, Any] | None:
        """Ask ``@on_conflict`` which state wins when a patch is stale; ``None``: no handler."""
        handlers = self._handlers(HookKind.CONFLICT)
        if not handlers:
            return None
        record = self.run.store.records[intent.id]
        versions = [
            Response(record.state, self._last_writer(intent.id) or record.assigned_to or "",
                     record.version),
            Response({**record.state, **patch}, intent.assigned_to or "", expected_version),
        ]
        value = await call_handler(handlers[0], intent, versions, clock=self.run.clock)
        return _as_dict(value, handlers[0].name)

    def _last_writer(self, intent_id: str) -> str | None:
        """Who wrote an intent's current state, from the log (conflicts are rare: a scan)."""
        for type_, _time, event_intent, data in reversed(self.run.store.events):
            if event_intent == intent_id and type_ == EventType.STATE_PATCHED:
                by: str | None = (data or {}).get("by")
                return by
        return None

    # ------------------------------------------------------------------ decisions

    def record_decision(
        self,
        coordinator_id: str,
        intent_id: str | None,
        decision: str,
        rationale: str,
        data: Mapping[str, Any],
    ) -> Decision:
        """Append a decision record to the event log and return it."""
        frozen_data = decision_data(decision, data)
        if intent_id is not None and intent_id not in self.run.store.records:
            raise OpenIntentError(f"record_decision: intent {intent_id!r} is not in this run")
        store = self.run.store
        self.run.bus.emit(
            EventType.DECISION,
            intent_id,
            {
                "id": decision_id(store.portfolio_id, len(store.decisions)),
                "coordinator_id": coordinator_id,
                "decision": decision,
                "rationale": str(rationale),
                "data": frozen_data,
            },
        )
        return store.decisions[-1]

    # ------------------------------------------------------------------ dynamic planning

    async def add_intent(self, spec: IntentSpec) -> str:
        """Add an intent to the running portfolio (see ``CoordinatorMethods.add_intent``).

        The plan compiler checks it as ``rt.run`` checks a spec's intents, so a mistake raises
        the same error from this call, and the run goes on without it.
        """
        run = self.run
        ids = run.titles()
        planned = self.runtime.planner.extend(
            spec, self.coordinator, portfolio=run.name, titles=ids,
            position=lambda title: run.node(ids[title]).index,
        )
        if run.breach is not None:
            raise OpenIntentError(
                f"cannot add {spec.title!r}: the {run.breach.guardrail} guardrail halted the "
                "run, so nothing new is dispatched"
            )
        if not run.accepting:
            raise OpenIntentError(
                f"cannot add {spec.title!r}: every intent of the portfolio has finished"
            )
        return run.add_intent(planned)

    async def run_subportfolio(self, spec: PortfolioSpec, coordinator_id: str) -> RunResult:
        """Run a sub-portfolio under the coordinator ``coordinator_id`` (the one calling
        ``execute``), with the same agents and clock.

        Each cost it records is also recorded in this run's ledger as it happens (a run-level
        ``cost_recorded`` event naming the sub-portfolio), so this run's budget bounds it.
        """
        bus = self.run.bus
        coordinator = self.coordinator
        if coordinator is None or coordinator.id != coordinator_id:
            # A coordinator that was given an intent of this run, not the one leading it.
            coordinator = self.runtime.planner.agent(coordinator_id)
            if coordinator.kind != "coordinator":
                raise AgentError(
                    f"{coordinator_id!r} is an @Agent; only a @Coordinator runs a "
                    "sub-portfolio with execute()"
                )

        def roll_up(event: Event) -> None:
            if event.type == EventType.COST_RECORDED and self.run.accepting:
                data = to_plain(event.data or {})
                bus.emit(EventType.COST_RECORDED, None,
                         {**data, "subportfolio": event.portfolio_id})

        return await self.runtime.run_nested(spec, coordinator, roll_up, self.run)


def _as_dict(value: Any, where: str) -> dict[str, Any] | None:
    """A coordinator handler's result as intent state: a checked copy, or ``None``."""
    return json_state(value, where)


def _merge_delegated(
    own: dict[str, Any] | None, delegated: list[dict[str, Any] | None]
) -> dict[str, Any] | None:
    """The coordinator's own return value, with each delegate's result on top, in order."""
    merged = own
    for result in delegated:
        if result:
            merged = {**(merged or {}), **result}
    return merged


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a JSON-like value, to compare responses."""
    if isinstance(value, Mapping):
        return frozenset((key, _freeze(item)) for key, item in value.items())
    if isinstance(value, list | tuple | FrozenList):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, set | frozenset):
        return frozenset(_freeze(item) for item in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value

