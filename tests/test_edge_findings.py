"""Edge-case findings of the third review round (timeouts, hooks, concurrency, guardrails,
runtime reuse, simulated agents, determinism).

Each test is a minimal reproduction of a bug found in review, now fixed. Every run is bounded
by the virtual clock (or ends by itself); none uses a real-time guard.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import openintent
from openintent import Escalate, Runtime, SpecError, VirtualClock, register_guardrail
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_complete,
    on_conflict,
    on_escalation,
    on_event,
    on_retry,
)
from openintent.guardrails import BudgetGuardrail, Guardrail
from openintent.testing import SimulatedAgent, assert_replay_matches, isolated_registry

# ------------------------------------------------------------------ concurrency limits


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


# ------------------------------------------------------------------ halts


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


# ------------------------------------------------------------------ lifecycle hooks


# run_finished is logged after the run (and its hooks) ended: on_event cannot hear it.
@pytest.mark.parametrize("event_type", ["run_started", "created"])
@pytest.mark.asyncio
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


@pytest.mark.asyncio
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


# ------------------------------------------------------------------ delegation and escalation


@pytest.mark.asyncio
async def test_retrying_a_delegated_intent_records_no_failover() -> None:
    SimulatedAgent("dev", fail_times=1, result={"ok": True})

    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_assignment
        async def route(self, intent: Any) -> None:
            await self.delegate(intent, to="dev")

    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(
            PortfolioSpec("p", [IntentSpec("A", retry={"max_attempts": 2})]), coordinator=Lead)
    assert result.status == "completed"
    assert [d.decision for d in result.decisions] == []  # got ["failover"] (dev -> lead)


@pytest.mark.asyncio
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


@pytest.mark.asyncio
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


# ------------------------------------------------------------------ patch_state conflicts


@pytest.mark.asyncio
async def test_a_patch_conflict_names_who_wrote_the_current_version() -> None:
    versions_seen: list[list[tuple[str, int]]] = []

    @Agent("a")
    class A:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, bool]:
            await openintent.sleep(1)
            await self.patch_state(intent, {"by": "a"}, expected_version=intent.version)
            return {"ok": True}

    @Agent("b")
    class B:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, bool]:
            await openintent.sleep(2)
            await self.patch_state(intent, {"by": "b"}, expected_version=intent.version)
            return {"ok": True}

    @Coordinator("lead")
    class Lead:
        @on_conflict
        async def conflict(self, intent: Any, versions: Any) -> Any:
            versions_seen.append([(v.agent_id, v.version) for v in versions])
            return versions[-1]

    async with Runtime(agents=[A, B, Lead], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("X", assign=["a", "b"])]),
                              coordinator=Lead)
    assert result.status == "completed"
    assert versions_seen == [[("a", 1), ("b", 0)]]  # got [("a,b", 1), ("b", 0)]


# ------------------------------------------------------------------ guardrails


@pytest.mark.asyncio
async def test_a_subclass_of_a_built_in_guardrail_keeps_its_overrides() -> None:
    seen: list[str] = []

    class LoudBudget(BudgetGuardrail):
        def on_event(self, event: Any) -> None:
            seen.append(event.type)
            super().on_event(event)

    SimulatedAgent("a", result={"ok": True}, cost_usd=1)
    async with Runtime(clock=VirtualClock(), seed=0,
                       guardrails=[LoudBudget(max_cost_usd=5)]) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]))
    assert result.status == "completed"
    assert "cost_recorded" in seen


class _Refuse(Guardrail):
    async def before_dispatch(self, ctx: Any) -> None:
        raise RuntimeError("refused")


@pytest.mark.asyncio
async def test_attempts_refused_by_a_guardrail_are_counted() -> None:
    SimulatedAgent("a", result={"ok": True})
    async with Runtime(clock=VirtualClock(), seed=0, guardrails=[_Refuse()]) as rt:
        result = await rt.run(PortfolioSpec("p", [
            IntentSpec("A", assign="a", retry={"max_attempts": 3})]))
    [failed] = result.events.of_type("failed")
    assert failed.data["attempts"] == 3
    assert result.intents["A"].attempts == 3  # got 0


@pytest.mark.asyncio
async def test_a_halt_cancels_an_intent_backing_off_after_a_refused_attempt() -> None:
    class RefuseFirst(Guardrail):
        async def before_dispatch(self, ctx: Any) -> None:
            if ctx.title == "A" and ctx.attempt == 1:
                raise RuntimeError("not yet")

    SimulatedAgent("a", result={"ok": True})
    SimulatedAgent("spender", result={"ok": True}, cost_usd=10, delay=1)
    async with Runtime(clock=VirtualClock(), seed=0, guardrails=[
            RefuseFirst(), {"type": "budget", "max_cost_usd": 5}]) as rt:
        result = await rt.run(PortfolioSpec("p", [
            IntentSpec("A", assign="a",
                       retry={"max_attempts": 2, "initial_delay": 10, "jitter": False}),
            IntentSpec("S", assign="spender")]))
    assert result.status == "halted"
    assert result.intents["A"].status == "cancelled"


@pytest.mark.asyncio
async def test_a_factory_that_builds_a_plain_middleware_function_works() -> None:
    calls: list[str] = []

    async def middleware(ctx: Any, call_next: Any) -> Any:
        calls.append(ctx.title)
        return await call_next(ctx)

    register_guardrail("passthrough", lambda **fields: middleware)
    register_guardrail("nothing", lambda **fields: 42)
    SimulatedAgent("a", result={"ok": True})
    async with Runtime(clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "passthrough"}]) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]))
    assert result.status == "completed" and calls == ["A"]
    with pytest.raises(SpecError, match="returned 42, not a Guardrail"):
        Runtime(guardrails=[{"type": "nothing"}])


# ------------------------------------------------------------------ runtime reuse


@pytest.mark.asyncio
async def test_leaving_the_runtime_while_a_run_goes_on_still_ends_its_event_stream() -> None:
    SimulatedAgent("a", result={"ok": True}, delay=5)
    out: dict[str, Any] = {}
    rt = Runtime(clock=VirtualClock(), seed=0)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            out["result"] = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]))

        async def watch() -> None:
            out["types"] = [event.type async for event in rt.events()]

        async with rt:
            tg.start_soon(watch)
            tg.start_soon(run)
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
    assert out["result"].status == "completed"
    assert out["types"][-1] == "run_finished"  # got the stream cut after "dispatched"


# ------------------------------------------------------------------ determinism


@pytest.mark.asyncio
async def test_the_same_seed_gives_the_same_log_with_the_same_simulated_agent() -> None:
    with isolated_registry():
        agent = SimulatedAgent("a", fail_times=1, result={"ok": True})
    spec = PortfolioSpec("p", [IntentSpec("A", assign="a", retry={"max_attempts": 2})])
    logs = []
    for _ in range(2):
        async with Runtime(agents=[agent], clock=VirtualClock(), seed=0) as rt:
            result = await rt.run(spec)
        assert_replay_matches(result)
        logs.append(masked([(e.type, e.time, e.intent_id, e.data) for e in result.events]))
    assert logs[0] == logs[1]


_RUN_TOKEN = re.compile(r"\b(pf|in|dc)_[0-9a-f]{16}")


def masked(value: Any) -> Any:
    """``value`` with each run's token masked out of its ids (``in_<token>_3`` becomes
    ``in_*_3``): ids are unique to each run, everything else a seed reproduces."""
    if isinstance(value, str):
        return _RUN_TOKEN.sub(r"\1_*", value)
    if isinstance(value, Mapping):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [masked(item) for item in value]
    return value
