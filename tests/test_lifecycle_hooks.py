"""Lifecycle hooks: ``on_complete``, ``on_all_complete``, ``on_retry`` and ``on_event`` fire
once per event they listen to, on the right agent, in event order."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from openintent import RunFailedError, Runtime, VirtualClock
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
    on_state_change,
)
from openintent.testing import SimulatedAgent

from _helpers import Dev, Echo, FlakyAgent, Lead, portfolio, run

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


async def test_on_all_complete_fires_once_and_its_value_is_the_output():
    lead = Lead()
    spec = portfolio(IntentSpec("A", assign="echo"), IntentSpec("B", assign="echo",
                                                                  depends_on=["A"]))
    result = await run(spec, Echo(), coordinator=lead)
    assert lead.finished == 1
    assert result.output == {"done": ["A", "B"]}
    assert lead.completed == ["A", "B"]
    result.raise_for_status()


async def test_on_all_complete_does_not_fire_for_a_failed_run():
    lead = Lead()
    result = await run(portfolio(IntentSpec("A", assign="flaky")), FlakyAgent(failures=1),
                       coordinator=lead)
    assert result.status == "failed"
    assert lead.finished == 0


async def test_lifecycle_hooks_fire_on_the_agent():
    log: list[tuple] = []

    @Agent("hooked")
    class Hooked:
        @on_assignment
        async def work(self, intent):
            await self.patch_state(intent, {"progress": 50})
            await self.patch_state(intent, {"note": "x"})
            return {"progress": 100}

        @on_state_change(keys=["progress"])
        async def progressed(self, intent, old, new):
            log.append(("progress", old.get("progress"), new["progress"]))

        @on_state_change
        def anything(self, intent, old, new):
            log.append(("any", sorted(set(new) - set(old))))

        @on_complete
        async def done(self, intent):
            log.append(("complete", intent.title, intent.status))

        @on_event("dispatched")
        async def dispatched(self, event):
            log.append(("event", event.type, event.data["attempt"]))

    await run(portfolio(IntentSpec("A", assign="hooked")), Hooked)
    assert log == [
        ("event", "dispatched", 1),
        ("progress", None, 50),
        ("any", ["progress"]),
        ("any", ["note"]),
        ("progress", 50, 100),
        ("any", []),
        ("complete", "A", "completed"),
    ]


async def test_a_failing_hook_is_recorded_and_does_not_fail_the_run(reset_structlog):
    @Agent("grumpy")
    class Grumpy:
        @on_assignment
        async def work(self, intent):
            return {}

        @on_complete
        async def done(self, intent):
            raise ValueError("hook broke")

    with structlog.testing.capture_logs() as logs:
        result = await run(portfolio(IntentSpec("A", assign="grumpy")), Grumpy)
    assert result.status == "completed"
    (failure,) = result.events.of_type("hook_failed")
    assert failure.data["error"] == "hook broke"
    assert failure.data["handler"].endswith("Grumpy.done")
    assert any(entry["event"] == "lifecycle handler failed" for entry in logs)


async def test_a_failing_on_all_complete_fails_the_run_but_keeps_the_work(reset_structlog):
    @Coordinator("broken-lead")
    class BrokenLead:
        @on_all_complete
        async def done(self, portfolio):
            raise KeyError("summary")

    with structlog.testing.capture_logs():
        result = await run(portfolio(IntentSpec("A", assign="echo")), Echo(),
                           coordinator=BrokenLead)
    assert result.status == "failed"
    assert result.intents["A"].status == "completed"
    assert result.error == "@on_all_complete raised KeyError: 'summary'"
    assert result.events.types()[-2:] == ["hook_failed", "run_finished"]
    with pytest.raises(RunFailedError, match="on_all_complete raised KeyError") as caught:
        result.raise_for_status()
    assert isinstance(caught.value.__cause__, KeyError)
