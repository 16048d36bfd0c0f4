"""Guardrails as middleware: every enforcement and every breach path of the built-ins, custom
guardrails through ``register_guardrail`` and objects, and the seed's ReviewCoordinator.

Timers run on a ``VirtualClock`` (seconds of virtual time cost microseconds), except the
approval tests that drive a run from the test while it waits: those use the real clock, instant
handlers and ``fail_after``. Virtual-clock runs are bounded by a *virtual* deadline
(:func:`bounded`), since a pending real-time deadline keeps a VirtualClock from jumping. Either
way a regression fails a test instead of hanging it.
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path
from types import ModuleType
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
    on_approval_denied,
    on_approval_granted,
    on_assignment,
    on_guardrail_breach,
)
from openintent.errors import ApprovalError, SpecError
from openintent.guardrails import (
    Breach,
    BudgetGuardrail,
    DispatchContext,
    Guardrail,
    register_guardrail,
)
from openintent.models import Event, RunResult
from openintent.testing import HANG, SimulatedAgent, assert_replay_matches, replay

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NO_DELAY = {"initial_delay": 0, "jitter": False}


# ----------------------------------------------------------------------------------- helpers


def statuses(result: RunResult) -> dict[str, str]:
    return {title: str(item.status) for title, item in result.intents.items()}


def of_type(result: RunResult, kind: str, title: str | None = None) -> list[Event]:
    events = result.events.of_type(kind)
    if title is not None:
        events = [event for event in events if event.intent_id == result.intents[title].id]
    return events


def dispatch_times(result: RunResult, title: str) -> list[float]:
    return [event.time for event in of_type(result, "dispatched", title)]


async def wait_for_requests(rt: Runtime, count: int = 1) -> list[Any]:
    """Poll ``rt.pending_approvals()`` until ``count`` requests wait (bounded)."""
    for _ in range(20_000):
        pending = rt.pending_approvals()
        if len(pending) >= count:
            return pending
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"expected {count} approval request(s), got {rt.pending_approvals()}")


async def bounded(rt: Runtime, spec: PortfolioSpec, coordinator: Any = None) -> RunResult:
    """``rt.run`` on a virtual clock, given up after 10**6 virtual seconds, so a regression
    that hangs fails the test (a real-time deadline would keep virtual time from jumping)."""
    result: RunResult | None = None
    with rt.clock.timeout(1e6):
        result = await rt.run(spec, coordinator=coordinator)
    assert result is not None, "the run was still going after 10**6 virtual seconds"
    return result


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fresh_types() -> None:
    """Guardrail types registered by a test vanish after it (the plugin's autouse fixture)."""


# -------------------------------------------------------------- the chain: custom guardrails


class Recorder(Guardrail):
    """Writes ``name:before`` / ``name:after`` for every attempt to a shared trail."""

    type = "recorder"

    def __init__(self, name: str, trail: list[str], seen: list[str] | None = None) -> None:
        self.name = name
        self.trail = trail
        self.seen = seen

    async def before_dispatch(self, ctx: DispatchContext) -> None:
        self.trail.append(f"{self.name}:before:{ctx.title}:{ctx.attempt}")

    async def after_result(self, ctx: DispatchContext, result: Any) -> Any:
        self.trail.append(f"{self.name}:after:{ctx.title}:{ctx.attempt}")
        answer = dict(result or {})
        return {**answer, "stamped_by": [*answer.get("stamped_by", []), self.name]}

    def on_event(self, event: Event) -> None:
        if self.seen is not None:
            self.seen.append(event.type)


@pytest.mark.asyncio
async def test_runtime_guardrails_wrap_the_coordinators_once_per_attempt(fresh_types):
    trail: list[str] = []
    seen: list[str] = []
    register_guardrail("recorder", lambda name: Recorder(name, trail))

    @Coordinator("lead", guardrails=[{"type": "recorder", "name": "coord"}])
    class Lead:
        pass

    worker = SimulatedAgent("worker", result=[RuntimeError("flaky"), {"ok": True}])
    spec = PortfolioSpec("chain", [IntentSpec("A", assign="worker",
                                              retry={"max_attempts": 2, **NO_DELAY})])
    runtime_guardrail = Recorder("rt", trail, seen)
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[runtime_guardrail]) as rt:
        result = await bounded(rt, spec, Lead)

    assert result.status == "completed"
    # Attempt 1 raised inside the chain: no after_result; attempt 2 went through both ways.
    assert trail == [
        "rt:before:A:1", "coord:before:A:1",
        "rt:before:A:2", "coord:before:A:2", "coord:after:A:2", "rt:after:A:2",
    ]
    assert len(worker.calls) == 2
    # after_result may replace the result: the innermost (coordinator's) stamps first.
    assert result.intents["A"].state == {"ok": True, "stamped_by": ["coord", "rt"]}
    # on_event sees every event of the run in order, once each, through run_finished.
    assert seen == result.events.types()
    assert seen[-6:] == ["dispatched", "attempt_failed", "retry_scheduled", "dispatched",
                         "completed", "run_finished"]


@pytest.mark.asyncio
async def test_on_event_sees_every_event_of_the_run_from_run_started():
    seen: list[str] = []
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("seen", [IntentSpec("A", assign="worker")])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[Recorder("rt", [], seen)]) as rt:
        result = await bounded(rt, spec)
    assert seen == result.events.types()


@pytest.mark.asyncio
async def test_a_guardrail_that_raises_in_before_dispatch_fails_the_attempt_without_dispatching(
):
    class Closed(Guardrail):
        async def before_dispatch(self, ctx: DispatchContext) -> None:
            if ctx.title == "Blocked":
                raise PermissionError("the gate is closed")

    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("gate", [
        IntentSpec("Blocked", assign="worker", retry={"max_attempts": 2, **NO_DELAY}),
        IntentSpec("Open", assign="worker"),
    ])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[Closed()]) as rt:
        result = await bounded(rt, spec)

    assert statuses(result) == {"Blocked": "failed", "Open": "completed"}
    assert result.intents["Blocked"].error_type == "PermissionError"
    assert len(of_type(result, "attempt_failed", "Blocked")) == 2  # the retry policy applied
    assert of_type(result, "dispatched", "Blocked") == []
    assert worker.titles == ["Open"]


@pytest.mark.asyncio
async def test_a_guardrail_may_answer_an_attempt_itself_without_calling_call_next():
    class Cached(Guardrail):
        async def __call__(self, ctx: DispatchContext, call_next: Any) -> Any:
            if ctx.title == "Cached":
                return {"cached": True}
            return await call_next(ctx)

    worker = SimulatedAgent("worker", result={"fresh": True})
    spec = PortfolioSpec("cache", [IntentSpec("Cached", assign="worker"),
                                   IntentSpec("Fresh", assign="worker")])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[Cached()]) as rt:
        result = await bounded(rt, spec)
    assert worker.titles == ["Fresh"]
    assert statuses(result) == {"Cached": "completed", "Fresh": "completed"}
    assert result.intents["Cached"].state == {"cached": True}


@pytest.mark.asyncio
async def test_a_guardrail_class_or_plain_function_is_refused_up_front_or_works():
    async def passthrough(ctx: DispatchContext, call_next: Any) -> Any:
        return await call_next(ctx)

    spec = PortfolioSpec("p", [IntentSpec("A", assign="worker")])
    SimulatedAgent("worker", result={"ok": True})
    with pytest.raises(SpecError, match=r"guardrails\[0\]"):
        Runtime(guardrails=[BudgetGuardrail])  # forgot to instantiate it
    try:
        rt = Runtime(clock=VirtualClock(), seed=0, guardrails=[passthrough])
    except SpecError:
        return
    async with rt:
        result = await bounded(rt, spec)
    assert result.status == "completed"


@pytest.mark.asyncio
async def test_unknown_types_and_bad_fields_are_spec_errors_before_anything_runs(
    fresh_types, captured_events
):
    register_guardrail("recorder", lambda name: Recorder(name, []))
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("p", [IntentSpec("A", assign="worker")])

    @Coordinator("typo", guardrails=[{"type": "budget", "max_cost_usd": 1},
                                     {"type": "Recorder", "name": "x"}])
    class Typo:
        pass

    # Guardrails of registered types are checked when the class is decorated.
    with pytest.raises(SpecError, match=r"@Coordinator\('bad-field'\) guardrails\[0\] "
                                        r"\(recorder\).*nmae"):
        Coordinator("bad-field", guardrails=[{"type": "recorder", "nmae": "x"}])
    with pytest.raises(SpecError, match="on_timeout must be"):
        Coordinator("bad-value", guardrails=[{"type": "approval", "require_for": ["x"],
                                              "on_timeout": "shrug"}])

    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        with pytest.raises(SpecError, match=r"guardrails\[1\]: unknown guardrail type "
                                            r"'Recorder'.*known types: .*recorder"):
            await rt.run(spec, coordinator=Typo)
    with pytest.raises(SpecError, match=r"warn_at is a fraction"):
        Runtime(guardrails=[{"type": "budget", "max_cost_usd": 1, "warn_at": 2}])
    with pytest.raises(SpecError, match="limit must be an int"):
        Runtime(guardrails=[{"type": "max_concurrency", "limit": 0}])
    with pytest.raises(SpecError, match=r"unknown field\(s\) \['fro'\]"):
        Runtime(guardrails=[{"type": "require_output", "keys": ["x"], "fro": ["A"]}])
    assert worker.calls == []
    assert captured_events == []  # no run even started


# ----------------------------------------------------------------------------------- budget


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


# ---------------------------------------------------------------------------------- timeout


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

    assert wall < 0.1
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


# --------------------------------------------------------------------------------- approval


def approval_lead(calls: list[tuple[str, str, Any]], **approval: Any) -> Any:
    @Coordinator("lead", guardrails=[{"type": "approval", **approval}])
    class Lead:
        @on_approval_granted
        async def granted(self, intent, request):
            calls.append(("granted", intent.title, request))

        @on_approval_denied
        async def denied(self, intent, request):
            calls.append(("denied", intent.title, request))

    return Lead


@pytest.mark.asyncio
async def test_a_matching_intent_waits_for_approval_then_runs(captured_events):
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["deploy"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("release", [
        IntentSpec("Build", assign="worker"),
        IntentSpec("Deploy", assign="worker", depends_on=["Build"]),
    ])
    seen: dict[str, Any] = {}
    async with Runtime(agents=[worker]) as rt:
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    seen["result"] = await rt.run(spec, coordinator=lead)

                tg.start_soon(run)
                [request] = await wait_for_requests(rt)
                seen["titles before"] = list(worker.titles)
                seen["status before"] = replay(captured_events)["Deploy"].status
                approved = await rt.approve(request.intent_id, by="alice", note="ship it")
                assert rt.pending_approvals() == []
    result = seen["result"]

    assert request.title == "Deploy"
    assert request.intent_id == result.intents["Deploy"].id
    assert seen["titles before"] == ["Build"]  # Deploy did not run while it waited
    assert seen["status before"] == "awaiting_approval"
    assert approved is request
    assert (request.decision, request.decided_by, request.note) == ("approved", "alice",
                                                                    "ship it")
    assert result.status == "completed"
    assert worker.titles == ["Build", "Deploy"]
    types = [event.type for event in result.events.for_intent(request.intent_id)
             if event.type != "decision_recorded"]
    assert types[types.index("approval_requested"):] == [
        "approval_requested", "approval_granted", "dispatched", "completed"]
    assert of_type(result, "approval_granted")[0].data["by"] == "alice"
    [decision] = result.decisions
    assert (decision.decision, decision.intent_id) == ("approval_granted", request.intent_id)
    assert decision.data == {"by": "alice"} and decision.rationale == "ship it"
    assert [(kind, title, req.decided_by) for kind, title, req in calls] == [
        ("granted", "Deploy", "alice")]


@pytest.mark.asyncio
async def test_a_denied_intent_fails_without_running_and_its_dependents_are_skipped():
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["deploy"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("release", [
        IntentSpec("Deploy", assign="worker", retry={"max_attempts": 3, **NO_DELAY}),
        IntentSpec("Announce", assign="worker", depends_on=["Deploy"]),
        IntentSpec("Docs", assign="worker"),
    ])
    seen: dict[str, Any] = {}
    async with Runtime(agents=[worker]) as rt:
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    seen["result"] = await rt.run(spec, coordinator=lead)

                tg.start_soon(run)
                [request] = await wait_for_requests(rt)
                await rt.deny(request.intent_id, by="bob", note="change freeze")
    result = seen["result"]

    assert result.status == "failed"
    assert statuses(result) == {"Deploy": "failed", "Announce": "skipped", "Docs": "completed"}
    assert worker.titles == ["Docs"]
    deploy = result.intents["Deploy"]
    assert deploy.error_type == "ApprovalError"
    assert "denied by bob: change freeze" in (deploy.error or "")
    assert of_type(result, "dispatched", "Deploy") == []
    assert of_type(result, "attempt_failed", "Deploy") == []  # never dispatched, not retried
    assert deploy.attempts == 0
    assert of_type(result, "retry_scheduled") == []
    assert [(d.decision, d.data) for d in result.decisions] == [
        ("approval_denied", {"by": "bob"})]
    assert [(kind, title, req.note) for kind, title, req in calls] == [
        ("denied", "Deploy", "change freeze")]


@pytest.mark.asyncio
async def test_require_for_matches_title_step_key_or_tag_case_insensitively():
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["Deploy", "prod"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("matching", [
        IntentSpec("DEPLOY", assign="worker"),
        IntentSpec("Ship it", key="deploy", assign="worker"),
        IntentSpec("Migrate", tags=["db", "PROD"], assign="worker"),
        IntentSpec("Deploy docs", key="docs", tags=["staging"], assign="worker"),
    ])
    seen: dict[str, Any] = {}
    async with Runtime(agents=[worker]) as rt:
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    seen["result"] = await rt.run(spec, coordinator=lead)

                tg.start_soon(run)
                pending = await wait_for_requests(rt, 3)
                for _ in range(50):  # give a wrongly matched fourth request time to show up
                    await anyio.lowlevel.checkpoint()
                seen["pending"] = sorted(request.title for request in rt.pending_approvals())
                for request in pending:
                    await rt.approve(request.intent_id, by="alice")
    result = seen["result"]

    assert seen["pending"] == ["DEPLOY", "Migrate", "Ship it"]
    assert result.status == "completed"
    assert sorted(title for _, title, _ in calls) == ["DEPLOY", "Migrate", "Ship it"]
    assert of_type(result, "approval_requested", "Deploy docs") == []
    assert len(of_type(result, "approval_granted")) == 3


@pytest.mark.asyncio
async def test_only_listed_approvers_may_decide_and_a_refusal_changes_nothing(
    captured_events,
):
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["deploy"], approvers=["alice"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("release", [IntentSpec("Deploy", assign="worker")])
    seen: dict[str, Any] = {}
    async with Runtime(agents=[worker]) as rt:
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    seen["result"] = await rt.run(spec, coordinator=lead)

                tg.start_soon(run)
                [request] = await wait_for_requests(rt)
                assert request.approvers == ("alice",)
                events_before = len(captured_events)
                with pytest.raises(ApprovalError, match="'mallory' may not decide"):
                    await rt.approve(request.intent_id, by="mallory")
                with pytest.raises(ApprovalError, match="'mallory' may not decide"):
                    await rt.deny(request.intent_id, by="mallory")
                with pytest.raises(ApprovalError, match="by="):
                    await rt.approve(request.intent_id, by="")
                for _ in range(20):
                    await anyio.lowlevel.checkpoint()
                seen["events unchanged"] = len(captured_events) == events_before
                seen["still pending"] = rt.pending_approvals() == [request]
                seen["undecided"] = request.decision is None and worker.calls == []
                await rt.approve(request.intent_id, by="alice")
    result = seen["result"]

    assert seen["events unchanged"] and seen["still pending"] and seen["undecided"]
    assert result.status == "completed"
    assert request.decided_by == "alice"
    assert [(kind, req.decided_by) for kind, _, req in calls] == [("granted", "alice")]
    assert len(result.decisions) == 1


@pytest.mark.asyncio
async def test_concurrent_decisions_on_one_request_exactly_one_wins():
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["deploy"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("race", [IntentSpec("Deploy", assign="worker")])
    seen: dict[str, Any] = {}
    outcomes: list[tuple[str, str]] = []
    async with Runtime(agents=[worker]) as rt:
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    seen["result"] = await rt.run(spec, coordinator=lead)

                tg.start_soon(run)
                [request] = await wait_for_requests(rt)

                async def decide(approve: bool, who: str) -> None:
                    decide = rt.approve if approve else rt.deny
                    try:
                        await decide(request.intent_id, by=who)
                    except ApprovalError as exc:
                        outcomes.append((who, f"refused: {exc}"))
                    else:
                        outcomes.append((who, "won"))

                async with anyio.create_task_group() as deciders:
                    deciders.start_soon(decide, True, "alice")
                    deciders.start_soon(decide, False, "bob")
                    deciders.start_soon(decide, True, "carol")
    result = seen["result"]

    winners = [who for who, outcome in outcomes if outcome == "won"]
    assert len(outcomes) == 3 and len(winners) == 1
    assert all("already decided" in outcome for who, outcome in outcomes if who not in winners)
    assert request.decided_by == winners[0]
    assert len(calls) == 1 and calls[0][2].decided_by == winners[0]
    assert len(result.decisions) == 1
    assert len(of_type(result, "approval_granted") + of_type(result, "approval_denied")) == 1
    expected = "completed" if request.decision == "approved" else "failed"
    assert result.intents["Deploy"].status == expected


@pytest.mark.asyncio
async def test_deciding_a_request_that_does_not_exist_is_refused():
    async with Runtime(guardrails=[{"type": "approval", "require_for": ["x"]}]) as rt:
        with pytest.raises(ApprovalError, match="no approval request is pending"):
            await rt.approve("in_nope", by="alice")
        assert rt.pending_approvals() == []


@pytest.mark.parametrize(("on_timeout", "expected"), [
    (None, "failed"), ("deny", "failed"), ("approve", "completed")])
@pytest.mark.asyncio
async def test_an_undecided_request_takes_the_on_timeout_outcome_on_the_runtime_clock(
    on_timeout, expected
):
    calls: list[tuple[str, str, Any]] = []
    options = {} if on_timeout is None else {"on_timeout": on_timeout}
    lead = approval_lead(calls, require_for=["deploy"], timeout_seconds=3600, **options)
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("nobody home", [IntentSpec("Deploy", assign="worker")])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        started = time.perf_counter()
        result = await bounded(rt, spec, lead)
        assert time.perf_counter() - started < 0.1

    assert result.intents["Deploy"].status == expected
    granted = expected == "completed"
    [decided] = of_type(result, "approval_granted" if granted else "approval_denied")
    assert decided.time == 3600.0
    assert decided.data["by"] == "timeout"
    assert [(d.decision, d.data["by"]) for d in result.decisions] == [
        ("approval_granted" if granted else "approval_denied", "timeout")]
    assert [(kind, title) for kind, title, _ in calls] == [
        ("granted" if granted else "denied", "Deploy")]
    assert worker.titles == (["Deploy"] if granted else [])
    if not granted:
        assert result.intents["Deploy"].error_type == "ApprovalError"


# ------------------------------------------------------------------ rate limit, concurrency


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
    assert wall < 0.5


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


# ---------------------------------------------------------------------------- require output


@pytest.mark.asyncio
async def test_require_output_fails_an_attempt_missing_a_key_and_the_retry_policy_applies():
    writer = SimulatedAgent("writer", result=[{"draft": "..."}, {"summary": "short"}])
    lazy = SimulatedAgent("lazy", result={"draft": "..."})
    other = SimulatedAgent("other", result={"anything": 1})
    spec = PortfolioSpec("outputs", [
        IntentSpec("Write", assign="writer", retry={"max_attempts": 2, **NO_DELAY}),
        IntentSpec("Write again", assign="lazy", tags=["writing"]),
        IntentSpec("Publish", assign="other", depends_on=["Write again"]),
        IntentSpec("Unchecked", assign="other"),
    ])

    @Coordinator("lead", guardrails=[
        {"type": "require_output", "keys": ["summary"], "for": ["write", "WRITING"]}])
    class Lead:
        pass

    async with Runtime(agents=[writer, lazy, other], clock=VirtualClock(), seed=0) as rt:
        result = await bounded(rt, spec, Lead)

    assert statuses(result) == {"Write": "completed", "Write again": "failed",
                                "Publish": "skipped", "Unchecked": "completed"}
    write = result.intents["Write"]
    assert write.attempts == 2
    assert write.state == {"summary": "short"}  # the rejected result was not merged
    [failed_attempt] = of_type(result, "attempt_failed", "Write")
    assert failed_attempt.data["error_type"] == "OutputCheckError"
    assert "'summary'" in failed_attempt.data["error"]
    again = result.intents["Write again"]
    assert (again.error_type, again.attempts, again.state) == ("OutputCheckError", 1, {})
    assert result.intents["Unchecked"].state == {"anything": 1}  # "for" left it alone


# ---------------------------------------------------------------- a halted run loses nothing


@pytest.mark.asyncio
async def test_a_halted_run_says_what_ran_what_was_cancelled_and_what_never_started():
    finally_ran: list[str] = []

    @Agent("hanger")
    class Hanger:
        @on_assignment
        async def work(self, intent):
            try:
                await openintent.sleep(math.inf)
            finally:
                finally_ran.append(intent.title)

    builder = SimulatedAgent("builder", result={"artifact": "app.tar"}, delay=20, cost_usd=0.5)
    failing = SimulatedAgent("failing", result=RuntimeError("boom"))

    @Coordinator("lead", guardrails=[{"type": "approval", "require_for": ["deploy"]}])
    class Lead:
        pass

    spec = PortfolioSpec("release", [
        IntentSpec("Build", assign="builder"),
        IntentSpec("Test", assign="hanger", depends_on=["Build"]),
        IntentSpec("Deploy", assign="builder", depends_on=["Build"]),
        IntentSpec("Announce", assign="builder", depends_on=["Test"]),
        IntentSpec("Retrying", assign="failing",
                   retry={"max_attempts": 3, "initial_delay": 1000, "max_delay": 1000,
                          "jitter": False}),
    ])
    async with Runtime(agents=[Hanger, builder, failing], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "timeout", "max_seconds": 300}]) as rt:
        result = await bounded(rt, spec, Lead)

    assert result.status == "halted"
    assert result.titles_by_status() == {
        "completed": ["Build"],
        "cancelled": ["Test", "Deploy", "Retrying"],  # started, waiting approval, in backoff
        "pending": ["Announce"],
    }
    assert finally_ran == ["Test"]
    build = result.intents["Build"]
    assert (build.state, build.cost_usd) == ({"artifact": "app.tar"}, 0.5)
    assert [e.type for e in result.events.for_intent(build.id)] == [
        "created", "ready", "dispatched", "cost_recorded", "completed"]
    assert builder.titles == ["Build"]  # Deploy waited for approval; Announce never started
    assert of_type(result, "approval_requested", "Deploy")[0].time == 20.0
    assert rt.pending_approvals() == []
    assert result.intents["Retrying"].attempts == 1
    assert result.breach.guardrail == "timeout"
    assert result.to_dict()["breach"]["limit"] == 300
    assert_replay_matches(result)


# ------------------------------------------------------------------- the seed's review example


@pytest.mark.asyncio
async def test_the_seed_review_coordinator_runs_end_to_end(capsys):
    review = load_example("review")
    await review.main()
    out = capsys.readouterr().out
    assert "Review release notes: {'approved': True, 'votes': 2}" in out
    assert "Review code: {'approved': True, 'votes': 2}" in out
    assert out.count("decision: quorum_reached (2 of 3 agents answered)") == 2
    assert "cost: $1.60" in out

    reviewers = review.reviewers()
    async with Runtime(agents=reviewers, clock=VirtualClock(), seed=7) as rt:
        result = await bounded(rt, review.workflow, review.ReviewCoordinator)
    assert result.status == "completed"
    assert result.cost_by_agent == pytest.approx({"reviewer-a": 0.8, "reviewer-b": 0.8})
    assert result.events[-1].time == 45.0  # the slow reviewer was cancelled at the quorum
    assert of_type(result, "guardrail_breach") == []
    assert [len(agent.calls) for agent in reviewers] == [2, 2, 2, 0]


@pytest.mark.asyncio
async def test_the_review_coordinators_guardrails_hold():
    review = load_example("review")
    coordinator = review.ReviewCoordinator

    # timeout: every reviewer is slower than the 300 s limit.
    slow = [SimulatedAgent(f"reviewer-{x}", result={"approved": True}, delay=600,
                           register=False) for x in "abc"]
    async with Runtime(agents=slow, clock=VirtualClock(), seed=7) as rt:
        result = await bounded(rt, review.workflow, coordinator)
    assert result.status == "halted" and result.breach.guardrail == "timeout"
    assert of_type(result, "guardrail_breach")[0].time == 300.0
    assert set(statuses(result).values()) == {"cancelled"}

    # budget: two answers at $3 each exceed $5.
    pricey = [SimulatedAgent(f"reviewer-{x}", result={"approved": True}, delay=d, cost_usd=3.0,
                             register=False) for x, d in zip("abc", (10, 20, 30), strict=True)]
    single = PortfolioSpec("one review", [IntentSpec("Review code")])
    async with Runtime(agents=pricey, clock=VirtualClock(), seed=7) as rt:
        result = await bounded(rt, single, coordinator)
    assert result.status == "halted" and result.breach.guardrail == "budget"
    assert of_type(result, "guardrail_breach")[0].time == 20.0
    assert result.cost_usd == pytest.approx(6.0)

    # approval: a "deploy" step waits for a human; the answer comes from the event stream.
    quick = [SimulatedAgent(f"reviewer-{x}", result={"approved": True}, delay=5,
                            register=False) for x in "abc"]
    spec = PortfolioSpec("release", [IntentSpec("Review code"),
                                     IntentSpec("Deploy", depends_on=["Review code"])])
    async with Runtime(agents=quick, clock=VirtualClock(), seed=7) as rt:
        stream = rt.events()
        box: dict[str, Any] = {}

        async def approver() -> None:
            async for event in stream:
                if event.type == "approval_requested":
                    box["waited_at"] = event.time
                    await rt.approve(event.intent_id, by="release-manager")

        async with anyio.create_task_group() as tg:  # virtual clock: no real deadline here
            tg.start_soon(approver)
            box["result"] = await bounded(rt, spec, coordinator)
    result = box["result"]
    assert result.status == "completed"
    assert box["waited_at"] == 5.0
    assert result.intents["Deploy"].state == {"approved": True, "votes": 2}
    assert of_type(result, "approval_granted")[0].data["by"] == "release-manager"
