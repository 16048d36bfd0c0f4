"""Escalation: ``Escalate`` reaches ``@on_escalation``, which may delegate or resolve; an
unresolved or unhandled escalation fails the intent without a retry."""

from __future__ import annotations

from typing import Any

import pytest

from openintent import Escalate, Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_complete,
    on_escalation,
)
from openintent.testing import SimulatedAgent

from _helpers import one, portfolio, run, types_of

pytestmark = pytest.mark.asyncio


async def test_an_escalation_goes_to_on_escalation_which_may_delegate_beyond_the_team():
    calls: list[Any] = []
    junior = SimulatedAgent("junior", escalate="too hard", register=False)
    senior = SimulatedAgent("senior", result={"by": "senior"}, delay=7, register=False)

    @Coordinator("lead", agents=["junior"])
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            calls.append((intent.title, reason, intent.assigned_to))
            await self.delegate(intent, to="senior")  # not in agents: allowed when escalating

    result = await run(portfolio(IntentSpec("X", assign="junior")), junior, senior,
                       coordinator=Lead)
    assert result.status == "completed"
    x = result.intents["X"]
    assert x.state == {"by": "senior"}
    assert x.assigned_to == "senior"
    assert calls == [("X", "too hard", "junior")]
    assert types_of(result, "X") == ["created", "ready", "dispatched", "escalated", "handoff",
                                     "completed"]
    assert one(result, "escalated", "X").data == {"reason": "too hard", "agent": "junior"}
    assert one(result, "handoff", "X").data == {"from": "lead", "to": "senior"}


async def test_self_escalate_and_a_returned_dict_resolve_the_intent():
    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent):
            await self.escalate(intent, "need a decision")
            return {"unreachable": True}

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            return {"decided": reason}

    result = await run(portfolio(IntentSpec("X", assign="worker")), Worker, coordinator=Lead)
    assert result.intents["X"].state == {"decided": "need a decision"}
    assert result.intents["X"].assigned_to == "worker"
    assert "handoff" not in types_of(result, "X")


async def test_an_escalation_handler_that_raises_fails_the_attempt_and_retries_apply():
    calls: list[int] = []
    worker = SimulatedAgent("worker", escalate="stuck", register=False)

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            calls.append(intent.attempt)
            if intent.attempt == 1:
                raise RuntimeError("not now")
            return {"resolved_on": intent.attempt}

    spec = portfolio(IntentSpec("X", assign="worker", retry={
        "max_attempts": 3, "initial_delay": 1, "jitter": False}))
    result = await run(spec, worker, coordinator=Lead)
    assert result.status == "completed"
    assert calls == [1, 2]
    assert result.intents["X"].state == {"resolved_on": 2}
    assert result.intents["X"].attempts == 2
    assert types_of(result, "X") == [
        "created", "ready", "dispatched", "escalated", "attempt_failed", "retry_scheduled",
        "dispatched", "escalated", "completed"]


async def test_an_escalation_left_unresolved_fails_with_escalation_error_and_no_retry():
    worker = SimulatedAgent("worker", escalate="budget unclear", register=False)
    handled: list[str] = []

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            handled.append(reason)  # neither delegates nor returns a result

    spec = portfolio(IntentSpec("X", assign="worker", retry={"max_attempts": 3}))
    result = await run(spec, worker, coordinator=Lead)
    x = result.intents["X"]
    assert x.status == "failed"
    assert x.error_type == "EscalationError"
    assert "budget unclear" in x.error
    assert x.attempts == 1 and len(worker.calls) == 1
    assert handled == ["budget unclear"]


async def test_an_escalation_with_no_handler_fails_with_escalation_error_and_no_retry():
    worker = SimulatedAgent("worker", escalate="who decides?", register=False)

    @Coordinator("lead")
    class Lead:
        pass

    spec = portfolio(IntentSpec("X", assign="worker", retry={"max_attempts": 3}))
    result = await run(spec, worker, coordinator=Lead)
    x = result.intents["X"]
    assert x.error_type == "EscalationError"
    assert "who decides?" in x.error and "@on_escalation" in x.error
    assert x.attempts == 1 and len(worker.calls) == 1
    assert "retry_scheduled" not in types_of(result, "X")


async def test_on_escalation_may_not_delegate_to_an_unknown_agent():
    worker = SimulatedAgent("worker", escalate="help", register=False)

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            await self.delegate(intent, to="ghost")

    result = await run(portfolio(IntentSpec("X", assign="worker")), worker, coordinator=Lead)
    assert result.intents["X"].error_type == "DelegationError"
    assert "'ghost'" in result.intents["X"].error


async def test_an_agent_reached_by_delegation_can_escalate_back_to_the_coordinator():
    seen: list[str] = []
    junior = SimulatedAgent("junior", escalate="out of my depth", register=False)
    senior = SimulatedAgent("senior", result={"by": "senior"}, register=False)

    @Coordinator("lead", agents=["junior"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="junior")

        @on_escalation
        async def escalated(self, intent, reason):
            seen.append(reason)
            await self.delegate(intent, to="senior")

    result = await run(portfolio(IntentSpec("X")), junior, senior, coordinator=Lead)
    assert result.intents["X"].state == {"by": "senior"}
    assert result.intents["X"].assigned_to == "senior"
    assert seen == ["out of my depth"]
    assert [e.data["to"] for e in result.events.of_type("handoff")] == ["junior", "senior"]


async def test_a_timed_out_escalation_retries_without_a_failover_decision() -> None:
    SimulatedAgent("a", escalate="help")
    SimulatedAgent("senior", hang=True)

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent: Any, reason: str) -> None:
            await self.delegate(intent, to="senior")

    clock = VirtualClock()
    async with Runtime(clock=clock, seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec(
            "A", assign="a", timeout=10,
            retry={"max_attempts": 2, "initial_delay": 1, "jitter": False})]), coordinator=Lead)
    assert result.intents["A"].error_type == "IntentTimeoutError"
    assert clock.now() == 21.0  # the timeout bounds the escalation handler and its delegate
    assert [d.decision for d in result.decisions] == []


async def test_an_escalated_vote_leaves_the_intent_with_its_assignees() -> None:
    fired: list[str] = []

    @Agent("a")
    class A:
        @on_assignment
        async def work(self, intent: Any) -> None:
            raise Escalate("unsure")

        @on_complete
        async def done(self, intent: Any) -> None:
            fired.append("a")

    @Agent("b")
    class B:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, bool]:
            return {"ok": True}

        @on_complete
        async def done(self, intent: Any) -> None:
            fired.append("b")

    SimulatedAgent("senior", result={"ok": True})

    @Coordinator("lead", agents=["a", "b"])
    class Lead:
        @on_escalation
        async def escalated(self, intent: Any, reason: str) -> None:
            await self.delegate(intent, to="senior")

    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(
            PortfolioSpec("p", [IntentSpec("Review", assign=["a", "b"])]), coordinator=Lead)
    assert result.status == "completed"
    assert sorted(fired) == ["a", "b"]
    assert result.intents["Review"].assigned_to == "a,b"


async def test_an_unhandled_escalation_fails_the_intent_without_retrying():
    @Agent("escalator")
    class Escalator:
        def __init__(self) -> None:
            self.calls = 0

        @on_assignment
        async def work(self, intent):
            self.calls += 1
            if intent.title == "B":
                await self.escalate(intent, "too hard")
            raise Escalate("needs a human")

    agent = Escalator()
    spec = portfolio(IntentSpec("A", assign="escalator", retry={"max_attempts": 3}),
                     IntentSpec("B", assign="escalator"))
    result = await run(spec, agent)
    assert agent.calls == 2
    assert result.intents["A"].error_type == "EscalationError"
    assert "needs a human" in result.intents["A"].error
    assert "too hard" in result.intents["B"].error
