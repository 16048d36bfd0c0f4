"""Rate limits and concurrency limits: a slot is held only by a running attempt, never by an
intent waiting for approval or backing off before a retry."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.testing import SimulatedAgent

from _helpers import Concurrency, bounded, portfolio, run

# ---------------------------------------------------------------------------------- rate limits


@pytest.mark.asyncio
async def test_rate_limit_spaces_dispatches_on_the_virtual_clock():
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("burst", [IntentSpec(f"T{i}", assign="worker") for i in range(5)])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "rate_limit", "per_second": 2}]) as rt:
        started = time.perf_counter()
        result = await bounded(rt, spec)
        wall = time.perf_counter() - started

    assert result.status == "completed"
    times = sorted(event.time for event in result.events.of_type("dispatched"))
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [call.time for call in worker.calls] == times
    assert wall < 2.0  # spaced in real time, the five dispatches would take 2 s


@pytest.mark.asyncio
async def test_rate_limit_per_agent_gives_each_agent_its_own_budget_of_dispatches():
    a = SimulatedAgent("a", result={"ok": True})
    b = SimulatedAgent("b", result={"ok": True})
    spec = PortfolioSpec("two agents", [
        IntentSpec("A1", assign="a"), IntentSpec("B1", assign="b"),
        IntentSpec("A2", assign="a"), IntentSpec("B2", assign="b"),
        IntentSpec("A3", assign="a"),
    ])
    per_agent = {"type": "rate_limit", "per_second": 1, "per_agent": True}
    async with Runtime(agents=[a, b], clock=VirtualClock(), seed=0,
                       guardrails=[per_agent]) as rt:
        result = await bounded(rt, spec)
    assert result.status == "completed"
    assert [call.time for call in a.calls] == [0.0, 1.0, 2.0]
    assert [call.time for call in b.calls] == [0.0, 1.0]

    a2 = SimulatedAgent("a", result={"ok": True}, register=False)
    b2 = SimulatedAgent("b", result={"ok": True}, register=False)
    async with Runtime(agents=[a2, b2], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "rate_limit", "per_second": 1}]) as rt:
        together = await bounded(rt, spec)
    assert together.status == "completed"
    assert sorted(call.time for call in [*a2.calls, *b2.calls]) == [0.0, 1.0, 2.0, 3.0, 4.0]


# --------------------------------------------------------------------------- concurrency limits


@pytest.mark.parametrize(("limit", "peak", "finish"), [(2, 2, 30.0), (None, 6, 10.0)])
@pytest.mark.asyncio
async def test_max_concurrency_caps_the_handlers_running_at_once(limit, peak, finish):
    running = {"now": 0, "peak": 0}

    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent):
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
            try:
                await openintent.sleep(10)
            finally:
                running["now"] -= 1
            return {"ok": True}

    guardrails = [] if limit is None else [{"type": "max_concurrency", "limit": limit}]
    spec = PortfolioSpec("wide", [IntentSpec(f"T{i}", assign="worker") for i in range(6)])
    async with Runtime(agents=[Worker], clock=VirtualClock(), seed=0,
                       guardrails=guardrails) as rt:
        result = await bounded(rt, spec)

    assert result.status == "completed"
    assert running == {"now": 0, "peak": peak}
    assert max(event.time for event in result.events.of_type("completed")) == finish
    if limit is not None:
        assert sorted(event.time for event in result.events.of_type("dispatched")) == [
            0.0, 0.0, 10.0, 10.0, 20.0, 20.0]


@pytest.mark.asyncio
async def test_an_intent_awaiting_approval_does_not_hold_the_only_slot() -> None:
    SimulatedAgent("deployer", result={"ok": True})
    builder = SimulatedAgent("builder", result={"ok": True}, delay=5)

    @Coordinator("cap", max_concurrency=1,
                 guardrails=[{"type": "approval", "require_for": ["Deploy"]}])
    class Cap:
        pass

    clock = VirtualClock()
    async with Runtime(clock=clock, seed=0) as rt:
        async with anyio.create_task_group() as tg:

            async def approve_later() -> None:
                await clock.sleep(50)
                await rt.approve("Deploy", by="alice")

            tg.start_soon(approve_later)
            result = await rt.run(PortfolioSpec("p", [
                IntentSpec("Deploy", assign="deployer"),
                IntentSpec("Build", assign="builder"),
            ]), coordinator=Cap)
    assert result.status == "completed"
    assert builder.calls[0].time == 0.0  # Build is not running-limited by a waiting approval


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
async def test_an_intent_in_retry_backoff_does_not_hold_the_only_slot() -> None:
    SimulatedAgent("flaky", fail_times=1, result={"ok": True})
    fast = SimulatedAgent("fast", result={"ok": True}, delay=1)

    @Coordinator("cap", max_concurrency=1)
    class Cap:
        pass

    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [
            IntentSpec("A", assign="flaky",
                       retry={"max_attempts": 2, "initial_delay": 60, "jitter": False}),
            IntentSpec("B", assign="fast"),
        ]), coordinator=Cap)
    assert result.status == "completed"
    assert fast.calls[0].time == 0.0  # actually 60.0: B waited for A's whole backoff


@pytest.mark.asyncio
async def test_max_concurrency_caps_the_running_handlers():
    counted = Concurrency()
    Capped = counted.agent("capped")

    @Coordinator("cap", max_concurrency=3)
    class Cap:
        pass

    spec = portfolio(*(IntentSpec(f"I{i}", assign="capped") for i in range(12)))
    clock = VirtualClock()
    result = await run(spec, Capped, coordinator=Cap, clock=clock)
    assert result.status == "completed"
    assert counted.peak == 3
    assert clock.now() == 4.0  # twelve one-second handlers, three at a time
