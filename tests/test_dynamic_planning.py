"""Dynamic planning: ``add_intent`` grows the running plan, ``execute`` runs a sub-portfolio."""

from __future__ import annotations

from typing import Any

import pytest

import openintent
from openintent import OpenIntentError, Runtime, VirtualClock
from openintent.agents import (
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_complete,
    on_guardrail_breach,
)
from openintent.errors import DependencyCycleError, DuplicateIntentError, UnknownDependencyError
from openintent.models import RunResult
from openintent.testing import SimulatedAgent, assert_replay_matches

from _helpers import one, portfolio, run, types_of

pytestmark = pytest.mark.asyncio


async def test_add_intent_while_running_extends_the_plan():
    worker = SimulatedAgent("w", result=lambda i: {"t": i.title, "saw": sorted(i.inputs)},
                            delay=1, register=False)
    added: list[str] = []

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            await openintent.sleep(5)  # A has completed by now; B is still pending
            added.append(await self.add_intent(IntentSpec("C", assign="w",
                                                          depends_on=["A", "B"])))
            added.append(await self.add_intent(IntentSpec("D", assign="w")))
            return {"planned": True}

    spec = portfolio(IntentSpec("A", assign="w"), IntentSpec("Plan"),
                     IntentSpec("B", assign="w", depends_on=["Plan"]))
    result = await run(spec, worker, coordinator=Planner)
    assert result.status == "completed"
    assert list(result.intents) == ["A", "Plan", "B", "C", "D"]
    assert added == [result.intents["C"].id, result.intents["D"].id]
    assert result.intents["C"].state == {"t": "C", "saw": ["A", "B"]}
    assert result.intents["C"].depends_on == ("A", "B")
    assert worker.titles.index("B") < worker.titles.index("C")
    assert_replay_matches(result)


async def test_add_intent_refuses_duplicates_unknown_and_self_dependencies():
    refused: list[tuple[str, str]] = []

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            for spec in (IntentSpec("Plan", assign="w"),
                         IntentSpec("Y", assign="w", depends_on=["Nope"]),
                         IntentSpec("Z", assign="w", depends_on=["Z"])):
                try:
                    await self.add_intent(spec)
                except OpenIntentError as exc:
                    refused.append((type(exc).__name__, str(exc)))
            return {}

    worker = SimulatedAgent("w", result={}, register=False)
    result = await run(portfolio(IntentSpec("Plan")), worker, coordinator=Planner)
    assert result.status == "completed"
    assert list(result.intents) == ["Plan"]
    assert [name for name, _ in refused] == [
        DuplicateIntentError.__name__, UnknownDependencyError.__name__,
        DependencyCycleError.__name__]
    assert "intents[0] and the added intent are both titled 'Plan'" in refused[0][1]
    assert "'Nope'" in refused[1][1]
    assert "itself" in refused[2][1]
    assert worker.calls == []


async def test_an_added_intent_whose_dependency_already_failed_is_skipped():
    bad = SimulatedAgent("bad", result=RuntimeError("nope"), register=False)
    worker = SimulatedAgent("w", result={}, register=False)

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            await openintent.sleep(5)  # Bad has failed by now
            await self.add_intent(IntentSpec("After", assign="w", depends_on=["Bad"]))
            return {}

    result = await run(portfolio(IntentSpec("Bad", assign="bad"), IntentSpec("Plan")),
                       bad, worker, coordinator=Planner)
    assert result.status == "failed"
    assert result.intents["After"].status == "skipped"
    assert types_of(result, "After") == ["created", "skipped"]
    assert "'Bad'" in one(result, "skipped", "After").data["reason"]
    assert worker.calls == []


async def test_add_intent_from_on_complete_while_other_work_runs():
    worker = SimulatedAgent("w", result={}, register=False)
    slow = SimulatedAgent("slow", result={}, delay=10, register=False)

    @Coordinator("planner")
    class Planner:
        @on_complete
        async def grow(self, intent):
            if intent.title == "A":
                await self.add_intent(IntentSpec("B", assign="w", depends_on=["A"]))

    result = await run(portfolio(IntentSpec("A", assign="w"), IntentSpec("S", assign="slow")),
                       worker, slow, coordinator=Planner)
    assert result.status == "completed"
    assert result.intents["B"].status == "completed"
    assert worker.titles == ["A", "B"]


async def test_add_intent_from_on_complete_of_the_last_intent_extends_the_plan():
    worker = SimulatedAgent("w", result={}, register=False)

    @Coordinator("planner")
    class Planner:
        @on_complete
        async def grow(self, intent):
            if intent.title == "A":
                await self.add_intent(IntentSpec("B", assign="w", depends_on=["A"]))

    result = await run(portfolio(IntentSpec("A", assign="w")), worker, coordinator=Planner)
    assert result.events.of_type("hook_failed") == []
    assert list(result.intents) == ["A", "B"]
    assert worker.titles == ["A", "B"]


async def test_add_intent_after_a_halt_says_the_run_was_halted() -> None:
    messages: list[str] = []

    @Coordinator("lead", guardrails=[{"type": "timeout", "max_seconds": 10}])
    class Lead:
        @on_guardrail_breach
        async def breached(self, intent: Any, breach: Any) -> None:
            try:
                await self.add_intent(IntentSpec("Cleanup", assign="a"))
            except Exception as exc:
                messages.append(str(exc))

    SimulatedAgent("a", hang=True)
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]),
                              coordinator=Lead)
    assert result.status == "halted" and len(messages) == 1
    assert "halted" in messages[0], messages[0]


async def test_execute_runs_a_sub_portfolio_and_returns_its_result():
    worker = SimulatedAgent("w", result=lambda i: {"t": i.title, "saw": sorted(i.inputs)},
                            delay=2, register=False)
    subs: list[RunResult] = []
    clock = VirtualClock()

    @Coordinator("lead")
    class Lead:
        @on_assignment
        async def plan(self, intent):
            sub = await self.execute(portfolio(
                IntentSpec("S1", assign="w"), IntentSpec("S2", assign="w", depends_on=["S1"]),
                name="sub"))
            subs.append(sub)
            return {"sub": sub.status.value, "s2": dict(sub.intents["S2"].state)}

    result = await run(portfolio(IntentSpec("Main")), worker, coordinator=Lead, clock=clock)
    assert result.status == "completed"
    (sub,) = subs
    assert isinstance(sub, RunResult)
    assert sub.name == "sub" and sub.portfolio_id != result.portfolio_id
    assert sub.status == "completed"
    assert list(sub.intents) == ["S1", "S2"]
    assert result.intents["Main"].state == {
        "sub": "completed", "s2": {"t": "S2", "saw": ["S1"]}}
    assert clock.now() == 4.0  # same clock: S1 then S2, 2 s each
    # The sub-portfolio's events are its own.
    assert list(result.intents) == ["Main"]
    assert {e.data["title"] for e in result.events.of_type("created")} == {"Main"}
    assert {e.data["title"] for e in sub.events.of_type("created")} == {"S1", "S2"}
