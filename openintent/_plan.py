"""The plan: specs checked against the runtime's agents, before any of their work runs.

One compiler for every way work enters a run: ``rt.run`` and a coordinator's ``execute``
compile a whole :class:`PortfolioSpec`, a coordinator's ``add_intent`` extends a running plan
with one :class:`IntentSpec`. Each check lives here once, so a mistake is refused with the same
error (class and message), whichever way it comes in, and nothing of it is logged.

Ids are made here too. They never come from the runtime's seeded random generator: two
runtimes with the same ``seed=`` must not hand a store two runs under one id. The seed drives
retry jitter only, so a seeded run still repeats its events in the same order with the same
data; its ids differ by the run's token alone.
"""

from __future__ import annotations

import graphlib
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

import attrs

from ._dispatch import BoundAgent
from ._guardrail_core import Guardrail, build_guardrails
from ._quorum import quorum_needed
from ._registry import HookKind, suggest
from ._specs import IntentSpec, PortfolioSpec
from .errors import (
    AgentError,
    DependencyCycleError,
    DuplicateIntentError,
    OpenIntentError,
    SpecError,
    UnknownDependencyError,
)

__all__ = [
    "AgentLookup",
    "IntentPlan",
    "Plan",
    "Planner",
    "check_graph",
    "decision_id",
    "intent_id_prefix",
    "new_portfolio_id",
    "portfolio_of_intent",
]


# ---------------------------------------------------------------------------------- ids


def new_portfolio_id() -> str:
    """A portfolio id no other run has, in this process or any other (64 random bits)."""
    return f"pf_{os.urandom(8).hex()}"


def intent_id_prefix(portfolio_id: str) -> str:
    """Intent ids are this prefix plus the intent's position in the plan (cheap, unique)."""
    return f"in_{portfolio_id[3:]}_"


def portfolio_of_intent(intent_id: str) -> str | None:
    """The id of the run an intent id belongs to (see :func:`intent_id_prefix`), or ``None``
    for a string that is not an intent id."""
    if not intent_id.startswith("in_"):
        return None
    token, _, number = intent_id[3:].rpartition("_")
    return f"pf_{token}" if token and number.isdigit() else None


def decision_id(portfolio_id: str, number: int) -> str:
    """The id of a run's ``number``-th decision record (0-based)."""
    return f"dc_{portfolio_id[3:]}_{number}"


# ---------------------------------------------------------------------------------- graph


def check_graph(name: str, intents: Sequence[IntentSpec]) -> None:
    """Raise a :class:`~openintent.errors.SpecError` for duplicate titles, unknown
    dependencies or a dependency cycle; each message says how to fix it."""
    where = f"portfolio {name!r}"
    seen: dict[str, int] = {}
    for index, spec in enumerate(intents):
        if spec.title in seen:
            raise _duplicate(where, f"intents[{seen[spec.title]}]", f"intents[{index}]",
                             spec.title)
        seen[spec.title] = index
    # Declaration order is usually already a topological order (every dependency declared
    # before its dependents); then there can be no cycle and graphlib is not needed.
    ordered = True
    for index, spec in enumerate(intents):
        for dependency in spec.depends_on:
            position = seen.get(dependency)
            if position is None:
                raise _unknown_dependency(where, spec.title, dependency, seen)
            if position == index:
                raise _self_dependency(where, spec.title)
            if position > index:
                ordered = False
    if ordered:
        return
    sorter = graphlib.TopologicalSorter({spec.title: spec.depends_on for spec in intents})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the node that depends on it; we show "depends on".
        cycle = list(reversed(exc.args[1]))
        arrows = " -> ".join(cycle)
        raise DependencyCycleError(
            f"{where}: dependency cycle {arrows} (each intent depends on the next); remove one "
            "of these depends_on entries",
            cycle,
        ) from None


def _duplicate(where: str, first: str, second: str, title: str) -> DuplicateIntentError:
    return DuplicateIntentError(
        f"{where}: {first} and {second} are both titled {title!r}; titles name intents in "
        "depends_on, so give each a unique title"
    )


def _unknown_dependency(
    where: str, title: str, dependency: str, titles: Collection[str]
) -> UnknownDependencyError:
    return UnknownDependencyError(
        f"{where}: intent {title!r} depends on {dependency!r}, which is not an intent of this "
        f"portfolio{suggest(dependency, list(titles))}; depends_on takes titles of other intents"
    )


def _self_dependency(where: str, title: str) -> DependencyCycleError:
    return DependencyCycleError(
        f"{where}: intent {title!r} depends on itself ({title} -> {title}); remove {title!r} "
        "from its depends_on",
        [title, title],
    )


# ---------------------------------------------------------------------------------- plans


class AgentLookup(Protocol):
    """The runtime's agents by id (``openintent._dispatch.AgentTable``)."""

    def get(self, agent_id: str) -> BoundAgent: ...

    def resolve(self, obj: Any) -> BoundAgent: ...


@attrs.frozen(eq=False)
class Plan:
    """A portfolio spec checked against the runtime's agents: what a run is built from."""

    spec: PortfolioSpec
    coordinator: BoundAgent | None
    #: The agents of each intent, in declaration order (intents with one assign share one).
    assignees: tuple[tuple[BoundAgent, ...], ...]
    #: Every agent the run may call, the coordinator included (their hooks fire).
    agents: tuple[BoundAgent, ...]
    fallbacks: Mapping[str, BoundAgent]
    #: The runtime's guardrails, then the coordinator's.
    guardrails: tuple[Guardrail, ...]
    #: At most this many attempts at once (``None``: no cap); 1 for a sequential coordinator.
    max_concurrency: int | None
    sequential: bool


@attrs.frozen(eq=False)
class IntentPlan:
    """One intent checked for a running plan (a coordinator's ``add_intent``)."""

    spec: IntentSpec
    agents: tuple[BoundAgent, ...]
    fallbacks: Mapping[str, BoundAgent]


class Planner:
    """Compiles specs into plans against one runtime's agents and guardrails."""

    def __init__(self, agents: AgentLookup, guardrails: Sequence[Guardrail]) -> None:
        self._agents = agents
        self._guardrails = tuple(guardrails)

    def agent(self, agent_id: str) -> BoundAgent:
        """The bound agent for an id, or :class:`~openintent.errors.UnknownAgentError`."""
        return self._agents.get(agent_id)

    def coordinator(self, obj: Any) -> BoundAgent | None:
        """The coordinator given as an id, a decorated class or an instance (``None``: none)."""
        if obj is None:
            return None
        chosen = self._agents.resolve(obj)
        if chosen.kind != "coordinator":
            raise AgentError(
                f"{chosen.id!r} is an @Agent, not a @Coordinator; pass a class decorated with "
                "@Coordinator as rt.run(..., coordinator=...)"
            )
        return chosen

    def compile(self, spec: PortfolioSpec, coordinator: BoundAgent | None) -> Plan:
        """Check ``spec`` whole (graph, guardrails, agents) and resolve its agents.

        Raises a :class:`~openintent.errors.SpecError` (or :class:`AgentError` for an agent
        that cannot take work) and logs nothing when anything is wrong.
        """
        check_graph(spec.name, spec.intents)
        options: Mapping[str, Any] = {}
        guardrails = self._guardrails
        if coordinator is not None:
            options = coordinator.definition.options
            guardrails += tuple(build_guardrails(options.get("guardrails"),
                                                 f"@Coordinator({coordinator.id!r})"))
        used: dict[str, BoundAgent] = {}
        fallbacks: dict[str, BoundAgent] = {}
        by_assign: dict[Any, tuple[BoundAgent, ...]] = {}  # most intents share an assign
        assignees = []
        for intent_spec in spec.intents:
            agents = by_assign.get(intent_spec.assign)
            if agents is None:
                agents = by_assign[intent_spec.assign] = self._assignees(intent_spec, coordinator)
                used.update((agent.id, agent) for agent in agents)
            assignees.append(agents)
            if len(agents) > 1:
                _check_many(intent_spec, agents, coordinator)
            for fallback_id in intent_spec.retry.fallback:
                if fallback_id not in fallbacks:
                    fallback = self._checked_agent(fallback_id, f"intent {intent_spec.title!r}")
                    fallbacks[fallback_id] = used[fallback_id] = fallback
        if coordinator is not None:
            used.setdefault(coordinator.id, coordinator)
        sequential = options.get("strategy") == "sequential"
        return Plan(
            spec, coordinator, tuple(assignees), tuple(used.values()),
            MappingProxyType(fallbacks), guardrails,
            1 if sequential else options.get("max_concurrency"), sequential,
        )

    def extend(
        self,
        spec: IntentSpec,
        coordinator: BoundAgent | None,
        *,
        portfolio: str,
        titles: Collection[str],
        position: Callable[[str], int],
    ) -> IntentPlan:
        """Check one intent added to the running portfolio ``portfolio``, as ``compile``
        would have checked it as the portfolio's last intent.

        ``titles`` are the titles already in the plan; ``position`` gives the index of one.
        """
        if not isinstance(spec, IntentSpec):
            raise SpecError(
                f"add_intent() takes an IntentSpec, got {type(spec).__name__}: build one with "
                "IntentSpec(title=..., ...)"
            )
        where = f"portfolio {portfolio!r}"
        if spec.title in titles:
            raise _duplicate(where, f"intents[{position(spec.title)}]", "the added intent",
                             spec.title)
        for dependency in spec.depends_on:
            if dependency == spec.title:
                raise _self_dependency(where, spec.title)
            if dependency not in titles:
                raise _unknown_dependency(where, spec.title, dependency, titles)
        agents = self._assignees(spec, coordinator)
        if len(agents) > 1:
            _check_many(spec, agents, coordinator)
        fallbacks = {fallback_id: self._checked_agent(fallback_id, f"intent {spec.title!r}")
                     for fallback_id in spec.retry.fallback}
        return IntentPlan(spec, agents, MappingProxyType(fallbacks))

    # ------------------------------------------------------------------ agents

    def _assignees(
        self, spec: IntentSpec, coordinator: BoundAgent | None
    ) -> tuple[BoundAgent, ...]:
        """The agents an intent goes to: its assignees, or the coordinator's routing."""
        where = f"intent {spec.title!r}"
        if spec.assign is None:
            if coordinator is None:
                raise SpecError(
                    f"{where} has no assign and the run has no coordinator to route it: "
                    "set IntentSpec(assign='agent-id') or pass coordinator=... to rt.run()"
                )
            if coordinator.handlers_of(HookKind.ASSIGNMENT):
                return (coordinator,)
            fan_out = coordinator.definition.options.get("agents")
            if not fan_out:
                raise SpecError(
                    f"{where} has no assign, and coordinator {coordinator.id!r} has neither an "
                    "@on_assignment handler nor agents=[...] to fan it out to"
                )
            ids: Sequence[str] = fan_out
        else:
            ids = spec.assignees
        return tuple(self._checked_agent(agent_id, where) for agent_id in ids)

    def _checked_agent(self, agent_id: str, where: str) -> BoundAgent:
        try:
            agent = self._agents.get(agent_id)
        except OpenIntentError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        if not agent.handlers_of(HookKind.ASSIGNMENT):
            raise AgentError(
                f"{where} is assigned to {agent_id!r}, but "
                f"{type(agent.instance).__qualname__} has no @on_assignment handler to do it"
            )
        return agent


def _check_many(
    spec: IntentSpec, agents: tuple[BoundAgent, ...], coordinator: BoundAgent | None
) -> None:
    """A multi-agent intent: no fallback agents, and a quorum its assignees can reach."""
    where = f"intent {spec.title!r}"
    if spec.retry.fallback:
        raise SpecError(
            f"{where} has {len(agents)} assignees and retry fallback agents; a fallback "
            "takes over from one agent, so give it to single-agent intents (a multi-agent "
            "intent retries with all its assignees)"
        )
    quorum = coordinator.handlers_of(HookKind.QUORUM) if coordinator is not None else []
    if not quorum:
        return
    needed = quorum_needed(quorum[0].options["threshold"], len(agents))
    if needed > len(agents):
        raise SpecError(
            f"{where} has {len(agents)} assignees but the @on_quorum of coordinator "
            f"{coordinator.id if coordinator else ''!r} needs {needed}; lower the threshold "
            "or assign more agents"
        )
