"""The run timeout guardrail and intent timeouts, on the runtime's clock."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_guardrail_breach,
)
from openintent.guardrails import Breach
from openintent.models import RunResult
from openintent.testing import HANG, SimulatedAgent

from _helpers import NO_DELAY, bounded, of_type, statuses


def dispatch_times(result: RunResult, title: str) -> list[float]:
    return [event.time for event in of_type(result, "dispatched", title)]


@pytest.mark.asyncio
async def test_the_run_timeout_halts_on_the_runtime_clock_cancelling_running_handlers():
    finally_ran: list[str] = []
    breaches: list[tuple[Any, Breach]] = []

    @Agent("sleeper")
    class Sleeper:
        @on_assignment
        async def work(self, intent):
            try:
                await openintent.sleep(intent.constraints["seconds"])
                return {"slept": intent.constraints["seconds"]}
            finally:
                finally_ran.append(intent.title)

    @Coordinator("lead", guardrails=[{"type": "timeout", "max_seconds": 300}])
    class Lead:
        @on_guardrail_breach
        async def breached(self, intent, breach):
            breaches.append((intent, breach))

    spec = PortfolioSpec("slow", [
        IntentSpec("Quick", assign="sleeper", constraints={"seconds": 10}),
        IntentSpec("Long", assign="sleeper", constraints={"seconds": 10_000}),
        IntentSpec("Next", assign="sleeper", depends_on=["Long"], constraints={"seconds": 1}),
    ])
    clock = VirtualClock()
    async with Runtime(agents=[Sleeper], clock=clock, seed=0) as rt:
        started = time.perf_counter()
        result = await bounded(rt, spec, Lead)
        wall = time.perf_counter() - started

    assert wall < 5  # 300 virtual seconds took (far) less than 5 real ones, on a busy machine
    assert result.status == "halted"
    assert result.titles_by_status() == {
        "completed": ["Quick"], "cancelled": ["Long"], "pending": ["Next"]}
    assert sorted(finally_ran) == ["Long", "Quick"]
    assert result.intents["Quick"].state == {"slept": 10}
    [breach] = of_type(result, "guardrail_breach")
    assert breach.time == 300.0
    assert breach.intent_id is None
    assert (breach.data["guardrail"], breach.data["limit"]) == ("timeout", 300)
    [cancelled] = of_type(result, "cancelled", "Long")
    assert cancelled.time == 300.0
    assert "timeout guardrail" in cancelled.data["reason"]
    assert [d.decision for d in result.decisions] == ["guardrail_breach"]
    assert result.decisions[0].data["limit"] == 300
    assert [(intent, b.guardrail) for intent, b in breaches] == [(None, "timeout")]
    assert result.events[-1].type == "run_finished"
    assert result.events[-1].time == 300.0


@pytest.mark.asyncio
async def test_a_run_that_finishes_in_time_is_not_halted_later(runtime):
    @Coordinator("lead", guardrails=[{"type": "timeout", "max_seconds": 300}])
    class Lead:
        pass

    SimulatedAgent("worker", result={"ok": True}, delay=299)
    spec = PortfolioSpec("in time", [IntentSpec("A", assign="worker")])
    result = await bounded(runtime, spec, Lead)
    assert result.status == "completed"
    assert result.events[-1].time == 299.0
    # The next run gets a timer of its own, from its own start.
    again = await bounded(runtime, spec, Lead)
    assert again.status == "completed"
    assert again.events[-1].time == 598.0
    assert of_type(again, "guardrail_breach") == []


@pytest.mark.asyncio
async def test_run_timeout_bounds_on_all_complete() -> None:
    @Coordinator("lead", guardrails=[{"type": "timeout", "max_seconds": 300}])
    class Lead:
        @on_all_complete
        async def finish(self, portfolio: Any) -> dict[str, Any]:
            await openintent.sleep(1000)
            return {"done": True}

    SimulatedAgent("a", result={"v": 1})
    clock = VirtualClock()
    async with Runtime(clock=clock, seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]),
                              coordinator=Lead)
    assert result.status == "halted" and clock.now() == 300.0, (result.status, clock.now())


@pytest.mark.asyncio
async def test_an_intent_timeout_fails_or_retries_the_intent_without_halting_the_run():
    finally_count: list[int] = []

    @Agent("stuck")
    class Stuck:
        @on_assignment
        async def work(self, intent):
            try:
                await openintent.sleep(math.inf)
            finally:
                finally_count.append(intent.attempt)

    flaky = SimulatedAgent("flaky", result=[HANG, {"ok": True}])

    @Coordinator("lead", guardrails=[{"type": "timeout", "max_seconds": 300}])
    class Lead:
        pass

    retry = {"max_attempts": 2, **NO_DELAY}
    spec = PortfolioSpec("intent timeouts", [
        IntentSpec("Flaky", assign="flaky", timeout=5, retry=retry),
        IntentSpec("Stuck", assign="stuck", timeout=7, retry=retry),
        IntentSpec("After stuck", assign="flaky", depends_on=["Stuck"]),
    ])
    async with Runtime(agents=[Stuck, flaky], clock=VirtualClock(), seed=0) as rt:
        result = await bounded(rt, spec, Lead)

    assert result.status == "failed"
    assert result.breach is None
    assert of_type(result, "guardrail_breach") == []
    assert statuses(result) == {"Flaky": "completed", "Stuck": "failed", "After stuck": "skipped"}
    assert result.intents["Flaky"].attempts == 2
    assert dispatch_times(result, "Flaky") == [0.0, 5.0]
    assert of_type(result, "completed", "Flaky")[0].time == 5.0
    assert result.intents["Stuck"].error_type == "IntentTimeoutError"
    assert result.intents["Stuck"].attempts == 2
    assert finally_count == [1, 2]
    assert of_type(result, "failed", "Stuck")[0].time == 14.0
