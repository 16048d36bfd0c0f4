"""Hypothesis strategies for property tests of your own coordinators.

``portfolios()`` draws valid portfolio specs (random DAGs); ``fault_plans()`` draws which
agent fails, hangs, escalates or overspends on which call, and builds the simulated agents that
act it out.

>>> from hypothesis import given
>>> from openintent.testing.strategies import fault_plans, portfolios
>>> @given(portfolios(agents=["a", "b"]), fault_plans(["a", "b"]))
... def test_every_intent_ends(spec, plan): ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is a test dependency
    raise ImportError(
        "openintent.testing.strategies needs hypothesis: pip install 'openintent[test]'"
    ) from exc

from .._specs import IntentSpec, PortfolioSpec
from ..errors import Escalate
from ..models import Intent
from ._simulated import HANG, SimulatedAgent

__all__ = ["FAULT_KINDS", "FaultPlan", "fault_plans", "portfolios"]

FAULT_KINDS = ("fail", "hang", "escalate", "overspend")


@st.composite
def portfolios(
    draw: st.DrawFn,
    *,
    agents: Sequence[str] = ("agent-a", "agent-b", "agent-c"),
    min_intents: int = 1,
    max_intents: int = 12,
    max_width: int = 4,
    max_dependencies: int = 3,
    multi_assignee: bool = False,
    retry: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    name: str = "generated",
) -> PortfolioSpec:
    """A valid portfolio: a random DAG in layers of at most ``max_width`` intents.

    Each intent after the first layer depends on 1..``max_dependencies`` intents of earlier
    layers; titles are ``I0``, ``I1``, ... in declaration (and a topological) order. With
    ``multi_assignee`` some intents are assigned to several distinct agents. ``retry`` and
    ``timeout`` are given to every intent (a ``timeout`` turns a hanging agent of a fault plan
    into a failed attempt instead of a run that waits forever).
    """
    if not agents:
        raise ValueError("portfolios() needs at least one agent id")
    size = draw(st.integers(min_intents, max_intents))
    intents: list[IntentSpec] = []
    while len(intents) < size:
        earlier = [spec.title for spec in intents]  # every intent of the layers before
        width = draw(st.integers(1, min(max_width, size - len(intents))))
        for _ in range(width):
            depends_on: list[str] = []
            if earlier:
                depends_on = draw(
                    st.lists(st.sampled_from(earlier), min_size=1,
                             max_size=min(max_dependencies, len(earlier)), unique=True)
                )
            assign: str | list[str] = draw(st.sampled_from(list(agents)))
            if multi_assignee and len(agents) > 1 and draw(st.booleans()):
                assign = draw(st.lists(st.sampled_from(list(agents)), min_size=2,
                                       max_size=min(3, len(agents)), unique=True))
            intents.append(IntentSpec(f"I{len(intents)}", assign=assign, depends_on=depends_on,
                                      retry=dict(retry) if retry else None, timeout=timeout))
    return PortfolioSpec(name, intents)


@attrs.frozen
class FaultPlan:
    """Which agent misbehaves on which call (per intent), and how.

    ``faults[(agent_id, call)]`` is one of ``"fail"``, ``"hang"``, ``"escalate"``,
    ``"overspend"``; calls are counted per intent from 1. Calls without a fault answer
    normally.
    """

    faults: Mapping[tuple[str, int], str]
    max_calls: int

    def for_agent(self, agent_id: str) -> dict[int, str]:
        """The faults of one agent, by call number."""
        return {call: kind for (agent, call), kind in self.faults.items() if agent == agent_id}

    def agents(
        self,
        agent_ids: Sequence[str],
        *,
        result: Mapping[str, Any] | None = None,
        delay: float = 0.0,
        cost_usd: float = 0.0,
        overspend_usd: float = 100.0,
    ) -> list[SimulatedAgent]:
        """Simulated agents acting out this plan (answering ``result`` when they behave)."""
        built = []
        for agent_id in agent_ids:
            agent = SimulatedAgent(agent_id, delay=delay, cost_usd=cost_usd)
            faults = self.for_agent(agent_id)
            answer = dict(result or {"by": agent_id})
            agent.result = [
                _outcome(faults.get(call), agent, answer, overspend_usd)
                for call in range(1, self.max_calls + 2)
            ]
            built.append(agent)
        return built


def _outcome(kind: str | None, agent: SimulatedAgent, answer: dict[str, Any],
             overspend_usd: float) -> Any:
    if kind is None:
        return answer
    if kind == "fail":
        return RuntimeError(f"{agent.agent_id} failed (fault plan)")
    if kind == "hang":
        return HANG
    if kind == "escalate":
        return Escalate(f"{agent.agent_id} escalated (fault plan)")

    async def overspend(intent: Intent) -> dict[str, Any]:
        await agent.record_cost(intent, overspend_usd, fault="overspend")
        return answer

    return overspend


@st.composite
def fault_plans(
    draw: st.DrawFn,
    agents: Sequence[str],
    *,
    max_calls: int = 3,
    kinds: Sequence[str] = FAULT_KINDS,
    max_faults: int = 4,
) -> FaultPlan:
    """A :class:`FaultPlan` over ``agents``: up to ``max_faults`` faults on calls
    1..``max_calls``, of the given ``kinds``."""
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; valid: {FAULT_KINDS}")
    keys = st.tuples(st.sampled_from(list(agents)), st.integers(1, max_calls))
    faults = draw(st.dictionaries(keys, st.sampled_from(list(kinds)), max_size=max_faults))
    return FaultPlan(faults, max_calls)
