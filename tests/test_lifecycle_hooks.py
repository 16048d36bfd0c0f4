"""Lifecycle hooks: ``on_complete``, ``on_all_complete``, ``on_retry`` and ``on_event`` fire
once per event they listen to, on the right agent, in event order."""

from __future__ import annotations

from typing import Any

import pytest

from openintent import Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_complete,
    on_event,
    on_retry,
)
from openintent.testing import SimulatedAgent

from _helpers import Dev, portfolio, run

pytestmark = pytest.mark.asyncio


async def test_on_all_complete_fires_once_and_on_complete_for_every_completed_intent():
    dev = Dev()

    @Coordinator("lead", agents=["dev", "a", "b"])
    class Lead:
        def __init__(self) -> None:
            self.completed: list[str] = []
            self.finished: list[Any] = []

        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="dev")

        @on_complete
        async def seen(self, intent):
            self.completed.append(intent.title)

        @on_all_complete
        async def done(self, portfolio):
            self.finished.append(sorted(portfolio.intents))
            return {"done": len(portfolio.intents)}

    a = SimulatedAgent("a", result={"v": 1}, delay=1, register=False)
    b = SimulatedAgent("b", result={"v": 1}, delay=2, register=False)
    lead = Lead()
    spec = portfolio(IntentSpec("Routed"), IntentSpec("Multi", assign=["a", "b"]),
                     IntentSpec("Single", assign="a", depends_on=["Multi"]))
    result = await run(spec, dev, a, b, coordinator=lead)
    assert result.status == "completed"
    assert result.output == {"done": 3}
    assert lead.finished == [["Multi", "Routed", "Single"]]
    assert lead.completed == ["Routed", "Multi", "Single"]


async def test_on_complete_does_not_fire_for_failed_intents_nor_on_all_complete():
    bad = SimulatedAgent("bad", result=RuntimeError("x"), register=False)
    good = SimulatedAgent("good", result={}, register=False)
    log: list[str] = []

    @Coordinator("lead")
    class Lead:
        @on_complete
        async def seen(self, intent):
            log.append(intent.title)

        @on_all_complete
        async def done(self, portfolio):
            log.append("all")

    result = await run(portfolio(IntentSpec("Bad", assign="bad"),
                                 IntentSpec("Good", assign="good")), bad, good, coordinator=Lead)
    assert result.status == "failed"
    assert result.output is None
    assert log == ["Good"]


async def test_the_delegates_own_on_complete_fires():
    completed: list[str] = []

    @Agent("helper")
    class Helper:
        @on_assignment
        async def work(self, intent):
            return {"ok": True}

        @on_complete
        async def done(self, intent):
            completed.append(intent.title)

    @Coordinator("lead", agents=["helper"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="helper")

    result = await run(portfolio(IntentSpec("X")), Helper, coordinator=Lead)
    assert result.intents["X"].assigned_to == "helper"
    assert completed == ["X"]


async def test_the_agent_of_an_added_intent_gets_its_on_complete():
    completed: list[str] = []

    @Agent("late")
    class Late:
        @on_assignment
        async def work(self, intent):
            return {"ok": True}

        @on_complete
        async def done(self, intent):
            completed.append(intent.title)

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            await self.add_intent(IntentSpec("Added", assign="late"))
            return {}

    result = await run(portfolio(IntentSpec("Plan")), Late, coordinator=Planner)
    assert result.intents["Added"].status == "completed"
    assert completed == ["Added"]


async def test_on_complete_sees_the_delegate_as_assignee():
    assignees: list[Any] = []

    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="dev")

        @on_complete
        async def seen(self, intent):
            assignees.append(intent.assigned_to)

    result = await run(portfolio(IntentSpec("X")), Dev(), coordinator=Lead)
    assert result.intents["X"].assigned_to == "dev"
    assert assignees == ["dev"]


# run_finished is logged after the run (and its hooks) ended: on_event cannot hear it.
@pytest.mark.parametrize("event_type", ["run_started", "created"])
async def test_on_event_fires_for_run_level_and_created_events(event_type: str) -> None:
    seen: list[str] = []

    @Agent("w")
    class W:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, int]:
            return {"x": 1}

        @on_event(event_type)
        async def heard(self, event: Any) -> None:
            seen.append(event.type)

    async with Runtime(agents=[W], clock=VirtualClock(), seed=0) as rt:
        await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="w")]))
    assert seen == [event_type]


async def test_on_retry_fires_in_event_order_with_on_event() -> None:
    order: list[str] = []

    @Agent("a")
    class A:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, bool]:
            if intent.attempt == 1:
                raise RuntimeError("boom")
            return {"ok": True}

        @on_event("retry_scheduled")
        async def scheduled(self, event: Any) -> None:
            order.append("on_event(retry_scheduled)")

        @on_retry
        async def retrying(self, intent: Any, attempt: int, error: Exception) -> None:
            order.append("on_retry")

    async with Runtime(agents=[A], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [
            IntentSpec("A", assign="a", retry={"max_attempts": 2})]))
    assert result.status == "completed"
    assert order == ["on_event(retry_scheduled)", "on_retry"]


async def test_on_event_sees_a_decision_recorded_in_on_all_complete() -> None:
    seen: list[str] = []

    @Coordinator("lead")
    class Lead:
        @on_all_complete
        async def finish(self, portfolio: Any) -> dict[str, Any]:
            await self.record_decision(decision="ship", rationale="all green")
            return {"done": True}

        @on_event("decision_recorded")
        async def audit(self, event: Any) -> None:
            seen.append(event.data["decision"])

    SimulatedAgent("a", result={"v": 1})
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]),
                              coordinator=Lead)
    assert [d.decision for d in result.decisions] == ["ship"]
    assert seen == ["ship"]
