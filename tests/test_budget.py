"""The budget guardrail: spend is ledgered per intent, agent and run; spend past the budget
halts the run (wherever it is recorded); estimates are checked before dispatch.
(Reservations of running attempts: test_budget_reservations.)"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

import openintent
from openintent import RunHaltedError, Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_complete,
    on_guardrail_breach,
)
from openintent.guardrails import Breach
from openintent.testing import SimulatedAgent, assert_replay_matches

from _helpers import NO_DELAY, bounded, of_type


@pytest.mark.asyncio
async def test_spend_is_ledgered_per_intent_agent_and_run_and_warns_once():
    @Agent("writer")
    class Writer:
        @on_assignment
        async def work(self, intent):
            await self.record_cost(intent, 1.5, model="small", tokens=100)
            await self.record_cost(intent, 0.5, model="small", tokens=30)
            return {"written": intent.title}

    @Coordinator("lead", strategy="sequential",
                 guardrails=[{"type": "budget", "max_cost_usd": 10.0, "warn_at": 0.5}])
    class Lead:
        pass

    reviewer = SimulatedAgent("reviewer", result={"ok": True}, cost_usd=1.0)
    spec = PortfolioSpec("ledger", [
        IntentSpec("Draft 1", assign="writer"),
        IntentSpec("Draft 2", assign="writer"),
        IntentSpec("Review", assign="reviewer"),
        IntentSpec("Draft 3", assign="writer"),
    ])
    async with Runtime(agents=[Writer, reviewer], clock=VirtualClock(), seed=0) as rt:
        result = await bounded(rt, spec, Lead)

    assert result.status == "completed"
    assert result.cost_usd == pytest.approx(7.0)
    assert result.cost_by_agent == pytest.approx({"writer": 6.0, "reviewer": 1.0})
    assert {title: item.cost_usd for title, item in result.intents.items()} == pytest.approx(
        {"Draft 1": 2.0, "Draft 2": 2.0, "Review": 1.0, "Draft 3": 2.0})
    costs = of_type(result, "cost_recorded", "Draft 1")
    assert [dict(event.data) for event in costs] == [
        {"usd": 1.5, "agent": "writer", "model": "small", "tokens": 100},
        {"usd": 0.5, "agent": "writer", "model": "small", "tokens": 30},
    ]
    # 5.0 (half of 10) is first reached by Review's cost (2 + 2 + 1): one warning, then none.
    warnings = of_type(result, "budget_warning")
    assert len(warnings) == 1
    assert warnings[0].intent_id == result.intents["Review"].id
    assert dict(warnings[0].data) == {"spent_usd": 5.0, "max_cost_usd": 10.0, "warn_at": 0.5}
    assert of_type(result, "guardrail_breach") == []
    assert result.breach is None


@pytest.mark.asyncio
async def test_spend_past_the_budget_halts_the_run_cancels_handlers_and_tells_the_coordinator():
    finally_ran: list[str] = []
    breaches: list[tuple[str | None, Breach]] = []

    @Agent("spender")
    class Spender:
        @on_assignment
        async def work(self, intent):
            at, usd = intent.constraints["at"], intent.constraints["usd"]
            try:
                await openintent.sleep(at)
                await self.record_cost(intent, usd)
                await openintent.sleep(1)  # still working when the budget breaks
                return {"done": True}
            finally:
                finally_ran.append(intent.title)

    @Coordinator("lead", guardrails=[{"type": "budget", "max_cost_usd": 5.0}])
    class Lead:
        @on_guardrail_breach
        async def breached(self, intent, breach):
            breaches.append((intent.title if intent is not None else None, breach))

    spec = PortfolioSpec("spendy", [
        IntentSpec("Cheap", assign="spender", constraints={"at": 1, "usd": 2.0}),
        IntentSpec("Pricey", assign="spender", constraints={"at": 5, "usd": 4.0}),
        IntentSpec("Slow", assign="spender", constraints={"at": 100, "usd": 0.0}),
        IntentSpec("After", assign="spender", depends_on=["Pricey"],
                   constraints={"at": 0, "usd": 0.0}),
    ])
    async with Runtime(agents=[Spender], clock=VirtualClock(), seed=0) as rt:
        result = await bounded(rt, spec, Lead)

    assert result.status == "halted"
    assert result.titles_by_status() == {
        "completed": ["Cheap"], "cancelled": ["Pricey", "Slow"], "pending": ["After"]}
    assert sorted(finally_ran) == ["Cheap", "Pricey", "Slow"]  # After never started
    assert of_type(result, "dispatched", "After") == []
    assert result.intents["Cheap"].state == {"done": True}
    # The ledger keeps the spend that broke the budget.
    assert result.cost_usd == pytest.approx(6.0)
    assert result.cost_by_agent == pytest.approx({"spender": 6.0})
    assert result.intents["Pricey"].cost_usd == pytest.approx(4.0)

    pricey = result.intents["Pricey"].id
    [breach_event] = of_type(result, "guardrail_breach")
    assert breach_event.time == 5.0
    assert breach_event.intent_id == pricey
    assert breach_event.data["guardrail"] == "budget"
    assert breach_event.data["limit"] == 5.0
    assert breach_event.data["observed"] == pytest.approx(6.0)
    # Nothing is dispatched after the breach.
    dispatched = [event.seq for event in result.events.of_type("dispatched")]
    assert max(dispatched) < breach_event.seq
    [decision] = [d for d in result.decisions if d.decision == "guardrail_breach"]
    assert decision.coordinator_id == "runtime"
    assert decision.intent_id == pricey
    assert decision.data["limit"] == 5.0 and decision.data["observed"] == pytest.approx(6.0)
    assert [(title, breach.guardrail) for title, breach in breaches] == [("Pricey", "budget")]
    assert breaches[0][1] == result.breach
    assert "budget guardrail halted the run" in (result.error or "")
    with pytest.raises(RunHaltedError, match="halted") as caught:
        result.raise_for_status()
    assert caught.value.breach == result.breach
    assert_replay_matches(result)

    # The budget is per run: the same coordinator runs again from zero spend.
    finally_ran.clear()
    again = PortfolioSpec("again", [
        IntentSpec("Cheap again", assign="spender", constraints={"at": 1, "usd": 4.5})])
    async with Runtime(agents=[Spender], clock=VirtualClock(), seed=0) as rt:
        second = await bounded(rt, again, Lead)
    assert second.status == "completed" and second.cost_usd == pytest.approx(4.5)
    assert len(breaches) == 1


@pytest.mark.asyncio
async def test_the_intent_that_breaks_the_budget_does_not_complete_after_the_halt() -> None:
    SimulatedAgent("a", result={"ok": True}, cost_usd=10)
    SimulatedAgent("b", result={"ok": True})
    async with Runtime(clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "budget", "max_cost_usd": 5}]) as rt:
        result = await rt.run(PortfolioSpec("p", [
            IntentSpec("A", assign="a"), IntentSpec("B", assign="b", depends_on=["A"])]))
    assert result.status == "halted"
    types = result.events.types()
    assert "completed" not in types[types.index("guardrail_breach"):]
    assert result.intents["A"].status == "cancelled"  # as when the handler awaits once more


@pytest.mark.asyncio
async def test_spend_recorded_by_an_on_complete_hook_still_halts_the_run() -> None:
    @Coordinator("lead", guardrails=[{"type": "budget", "max_cost_usd": 5.0}])
    class Lead:
        @on_complete
        async def bill(self, intent: Any) -> None:
            await self.record_cost(intent, 10.0)

    SimulatedAgent("a", result={"v": 1})
    spec = PortfolioSpec("p", [IntentSpec("A", assign="a"),
                               IntentSpec("B", assign="a", depends_on=["A"])])
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec, coordinator=Lead)
    assert result.cost_usd == 20.0
    assert result.status == "halted", "spent $20 of a $5 budget and the run says completed"


@pytest.mark.asyncio
async def test_parent_budget_bounds_the_spend_of_a_sub_portfolio() -> None:
    @Coordinator("lead", guardrails=[{"type": "budget", "max_cost_usd": 5.0}])
    class Lead:
        @on_assignment
        async def plan(self, intent: Any) -> dict[str, Any]:
            await self.record_cost(intent, 4.0)  # $1 left
            chain = [IntentSpec("S0", assign="worker")] + [
                IntentSpec(f"S{i}", assign="worker", depends_on=[f"S{i - 1}"]) for i in (1, 2)
            ]
            sub = await self.execute(PortfolioSpec("sub", chain))
            return {"sub": str(sub.status)}

    worker = SimulatedAgent("worker", result={"ok": True}, delay=1, cost_usd=1.0)
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("Plan")]), coordinator=Lead)
    assert result.status == "halted"
    # $4 + $1 is within budget, the second $1 crosses it: the third step must never run.
    assert len(worker.calls) <= 2, (len(worker.calls), result.cost_usd)


@pytest.mark.asyncio
async def test_an_intent_estimated_past_the_budget_is_not_dispatched():
    first = SimulatedAgent("first", result={"ok": 1}, cost_usd=3.0)
    second = SimulatedAgent("second", result={"ok": 2})
    spec = PortfolioSpec("estimates", [
        IntentSpec("First", assign="first"),
        IntentSpec("Second", assign="second", depends_on=["First"],
                   constraints={"estimated_cost_usd": 3.0}),
    ])
    async with Runtime(agents=[first, second], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "budget", "max_cost_usd": 5.0}]) as rt:
        result = await bounded(rt, spec)

    assert result.status == "halted"
    [breach] = of_type(result, "guardrail_breach")
    assert breach.intent_id == result.intents["Second"].id
    assert breach.data["observed"] == pytest.approx(6.0)
    assert second.calls == []
    assert of_type(result, "dispatched", "Second") == []
    assert result.titles_by_status() == {"completed": ["First"], "pending": ["Second"]}


@pytest.mark.asyncio
async def test_an_estimate_within_the_budget_is_dispatched_and_its_retry_reserves_again():
    first = SimulatedAgent("first", result={"ok": 1}, cost_usd=3.0)
    second = SimulatedAgent("second", result=[RuntimeError("once"), {"ok": 2}], cost_usd=1.0)
    spec = PortfolioSpec("estimates", [
        IntentSpec("First", assign="first"),
        IntentSpec("Second", assign="second", depends_on=["First"],
                   constraints={"estimated_cost_usd": 2.0},
                   retry={"max_attempts": 2, **NO_DELAY}),
    ])
    async with Runtime(agents=[first, second], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "budget", "max_cost_usd": 5.0}]) as rt:
        result = await bounded(rt, spec)

    # 3 + 2 == 5 is not past the budget; the retry reserves its estimate too, and spend 4 +
    # estimate 2 is: the run halts before the retry is dispatched.
    assert result.status == "halted"
    assert [call.attempt for call in second.calls] == [1]
    assert result.breach is not None and result.breach.observed == pytest.approx(6.0)
    assert result.cost_usd == pytest.approx(4.0)


@pytest.mark.asyncio
async def test_the_live_event_stream_stays_in_order_when_the_budget_reacts_to_a_cost():
    spender = SimulatedAgent("spender", result={"ok": True}, cost_usd=4.0)
    spec = PortfolioSpec("stream", [IntentSpec("A", assign="spender")])
    streamed: list[int] = []
    async with Runtime(agents=[spender], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "budget", "max_cost_usd": 5.0,
                                    "warn_at": 0.5}]) as rt:
        stream = rt.events()

        async def watch() -> None:
            async for event in stream:
                streamed.append(event.seq)

        # No fail_after here: a pending real-time deadline keeps a VirtualClock from jumping.
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            result = await bounded(rt, spec)

    assert len(of_type(result, "budget_warning")) == 1
    assert streamed == list(range(len(result.events)))


@pytest.mark.asyncio
async def test_an_invalid_cost_is_a_cost_error_and_still_a_value_error():
    caught: list[BaseException] = []

    @Agent("bad-spender")
    class BadSpender:
        @on_assignment
        async def work(self, intent):
            for usd in (-1.0, float("nan"), float("inf")):
                try:
                    await self.record_cost(intent, usd)
                except ValueError as exc:  # existing `except ValueError` keeps working
                    caught.append(exc)
            return {}

    async with Runtime(agents=[BadSpender], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="bad-spender")]))
    assert result.status == "completed"
    assert len(caught) == 3
    assert all(isinstance(exc, openintent.CostError) for exc in caught)
    assert all(isinstance(exc, openintent.OpenIntentError) for exc in caught)
    assert "finite amount >= 0" in str(caught[0])
