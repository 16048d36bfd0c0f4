"""Regression tests for bugs found in review.

Every test is bounded: virtual runs end by themselves or through the virtual clock; the two
tests that would otherwise hang use a watchdog *thread* (``threading.Timer``), which keeps no
real-time timer in the event loop and so does not keep virtual time still.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

import openintent
from openintent import Runtime
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_complete,
    on_event,
    on_guardrail_breach,
)
from openintent.testing import SimulatedAgent, VirtualClock, assert_replay_matches

HANG_GUARD = 10  # real seconds; only a regression that hangs ever waits this long


@contextmanager
def watchdog(seconds: float) -> Iterator[anyio.CancelScope]:
    """A cancel scope cancelled from a thread after ``seconds`` of real time.

    Unlike ``anyio.fail_after`` it puts no timer into the event loop, so a VirtualClock still
    sees an idle loop and may jump.
    """
    loop = asyncio.get_running_loop()
    with anyio.CancelScope() as scope:
        timer = threading.Timer(seconds, lambda: loop.call_soon_threadsafe(scope.cancel))
        timer.start()
        try:
            yield scope
        finally:
            timer.cancel()


# ------------------------------------------------------------------ event log / replay


@pytest.mark.asyncio
async def test_log_does_not_change_when_a_handler_reuses_its_returned_dict() -> None:
    @Agent("counter")
    class Counter:
        def __init__(self) -> None:
            self.out: dict[str, int] = {}

        @on_assignment
        async def work(self, intent: Any) -> dict[str, int]:
            self.out["n"] = self.out.get("n", 0) + 1
            return self.out  # the same dict every call

    spec = PortfolioSpec("p", [IntentSpec("A", assign="counter"),
                               IntentSpec("B", assign="counter", depends_on=["A"])])
    async with Runtime(agents=[Counter], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec)
    assert result.intents["A"].state == {"n": 1}
    assert_replay_matches(result)  # replayed A says {"n": 2}


# ------------------------------------------------------------------ guardrails


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
async def test_an_intent_matched_by_two_approval_guardrails_can_be_approved() -> None:
    errors: list[Exception] = []
    runtimes: list[Runtime] = []

    @Coordinator("lead", guardrails=[{"type": "approval", "require_for": ["deploy"]}])
    class Lead:
        @on_event("approval_requested")
        async def approve_it(self, event: Any) -> None:  # one request per guardrail
            try:
                await runtimes[0].approve(event.intent_id, by="alice")
            except Exception as exc:  # "already decided; nothing changed"
                errors.append(exc)

    SimulatedAgent("a", result={"v": 1})
    clock = VirtualClock(deadlock_after=0.1)
    async with Runtime(clock=clock, seed=0,
                       guardrails=[{"type": "approval", "require_for": ["deploy"]}]) as rt:
        runtimes.append(rt)
        result = await rt.run(PortfolioSpec("p", [IntentSpec("deploy", assign="a")]),
                              coordinator=Lead)
    assert errors == []
    assert result.status == "completed"


# ------------------------------------------------------------------ notifications


@pytest.mark.asyncio
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


# ------------------------------------------------------------------ virtual clock


@pytest.mark.asyncio
async def test_two_runtimes_on_their_own_virtual_clocks_run_concurrently() -> None:
    agent = SimulatedAgent("a", result={"ok": True}, delay=10)
    spec = PortfolioSpec("p", [IntentSpec("A", assign="a")])
    results: list[Any] = []

    async def one() -> None:
        async with Runtime(agents=[agent], clock=VirtualClock(), seed=0) as rt:
            results.append(await rt.run(spec))

    with watchdog(HANG_GUARD) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
    assert not scope.cancelled_caught, "both runs were still at virtual time 0 after 10 s"
    assert [r.status for r in results] == ["completed", "completed"]


@pytest.mark.asyncio
async def test_a_stuck_on_all_complete_is_reported_as_a_deadlock() -> None:
    never = anyio.Event()

    @Coordinator("lead")
    class Lead:
        @on_all_complete
        async def finish(self, portfolio: Any) -> None:
            await never.wait()

    SimulatedAgent("a", result={"v": 1})
    with watchdog(HANG_GUARD) as scope:
        async with Runtime(clock=VirtualClock(deadlock_after=0.05), seed=0) as rt:
            await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]), coordinator=Lead)
    assert not scope.cancelled_caught, "hung instead of halting with a virtual_clock breach"


@pytest.mark.asyncio
async def test_virtual_sleep_outside_a_run_stops_at_an_earlier_timeout() -> None:
    clock = VirtualClock()
    with clock.timeout(10) as scope:
        await clock.sleep(1000)
    assert scope.cancelled_caught
    assert clock.now() == 10.0, clock.now()  # it is 1000.0


# ------------------------------------------------------------------ coordinators


@pytest.mark.asyncio
async def test_fallback_on_a_multi_assignee_intent_is_refused_before_running() -> None:
    a = SimulatedAgent("a", result=RuntimeError("a is down"))
    SimulatedAgent("b", result={"v": 1})
    fallback = SimulatedAgent("c", result={"v": 1})
    spec = PortfolioSpec("p", [IntentSpec("M", assign=["a", "b"],
                                          retry={"max_attempts": 1, "fallback": ["c"]})])
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        with pytest.raises(openintent.SpecError, match="intent 'M' has 2 assignees and retry "
                           "fallback agents"):
            await rt.run(spec)
    assert not a.calls and not fallback.calls


@pytest.mark.asyncio
async def test_record_decision_accepts_an_input_of_the_intent() -> None:
    @Coordinator("lead")
    class Lead:
        @on_assignment
        async def route(self, intent: Any) -> dict[str, Any]:
            await self.record_decision(intent_id=intent.id, decision="use_extract",
                                       rationale="fresh", source=intent.inputs["A"])
            return {"ok": True}

    SimulatedAgent("a", result={"rows": 3})
    spec = PortfolioSpec("p", [IntentSpec("A", assign="a"), IntentSpec("B", depends_on=["A"])])
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec, coordinator=Lead)
    # Fails with "TypeError: cannot pickle 'mappingproxy' object".
    assert result.status == "completed", result.intents["B"].error


@pytest.mark.asyncio
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


@pytest.mark.asyncio
async def test_a_max_concurrency_guardrail_slot_is_not_held_while_waiting_for_approval() -> None:
    builder = SimulatedAgent("builder", result={"ok": True}, delay=5)
    SimulatedAgent("deployer", result={"ok": True})
    guardrails = [{"type": "max_concurrency", "limit": 1},
                  {"type": "approval", "require_for": ["Deploy"]}]
    async with Runtime(clock=VirtualClock(), seed=0, guardrails=guardrails) as rt:
        async with anyio.create_task_group() as tg:
            results: list[Any] = []

            async def run() -> None:
                results.append(await rt.run(PortfolioSpec("p", [
                    IntentSpec("Deploy", assign="deployer"),
                    IntentSpec("Build", assign="builder"),
                ])))

            tg.start_soon(run)
            while not builder.calls:  # Build runs while Deploy waits for its approval
                await anyio.lowlevel.checkpoint()
            assert builder.calls[0].time == 0.0
            while not rt.pending_approvals():
                await anyio.lowlevel.checkpoint()
            await rt.approve("Deploy", by="ops")
    assert results[0].status == "completed"


@pytest.mark.asyncio
async def test_a_multi_agent_intent_that_never_started_names_its_assignees() -> None:
    SimulatedAgent("a", result={"ok": True}, cost_usd=10.0)
    SimulatedAgent("b", result={"ok": True})
    SimulatedAgent("c", result={"ok": True})
    spec = PortfolioSpec("p", [
        IntentSpec("Spend", assign="a"),
        IntentSpec("Vote", assign=["b", "c"], depends_on=["Spend"]),
    ])
    async with Runtime(clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "budget", "max_cost_usd": 5}]) as rt:
        result = await rt.run(spec)
    assert result.status == "halted"
    assert result.intents["Vote"].status == "pending"
    assert result.intents["Vote"].assigned_to == "b,c"
