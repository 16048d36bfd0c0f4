"""The testing kit: virtual clock, simulated agents, determinism, assertions, replay, plugin."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

import openintent
from openintent import Escalate, Runtime, VirtualClock
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import RunResult
from openintent.testing import (
    HANG,
    SimulatedAgent,
    assert_event_types,
    assert_ran_before,
    assert_replay_matches,
    capture_events,
    event_types,
    isolated_registry,
    replay,
)

from _helpers import masked

pytestmark = pytest.mark.asyncio


def portfolio(*intents: IntentSpec) -> PortfolioSpec:
    return PortfolioSpec("test", list(intents))


async def run(spec: PortfolioSpec, *agents, clock=None, seed=0):
    async with Runtime(agents=list(agents), clock=clock or VirtualClock(), seed=seed) as rt:
        return await rt.run(spec)


# ---------------------------------------------------------------------------- virtual clock


async def test_a_300_second_timeout_fires_without_waiting_in_real_time():
    clock = VirtualClock()
    stuck = SimulatedAgent("stuck", hang=True)
    started = time.perf_counter()
    result = await run(portfolio(IntentSpec("Wait", assign="stuck", timeout=300)), stuck,
                       clock=clock)
    elapsed = time.perf_counter() - started
    assert elapsed < 5  # well under 300 s, even on a busy machine
    assert clock.now() == 300.0
    assert result.intents["Wait"].error_type == "IntentTimeoutError"
    failed = result.events.of_type("failed")[0]
    assert failed.time == 300.0


async def test_backoff_and_delays_follow_virtual_time_exactly():
    flaky = SimulatedAgent("flaky", result={"ok": True}, fail_times=2, delay=5)
    spec = portfolio(IntentSpec("A", assign="flaky", retry={
        "max_attempts": 3, "initial_delay": 10, "multiplier": 3, "jitter": False}))
    result = await run(spec, flaky)
    # attempt 1 at 0 (+5 delay) fails at 5; waits 10; attempt 2 at 15 fails at 20; waits 30;
    # attempt 3 at 50 answers at 55.
    assert [call.time for call in flaky.calls] == [0.0, 15.0, 50.0]
    assert result.events.of_type("completed")[0].time == 55.0


async def test_concurrent_sleepers_wake_in_deadline_order():
    woke: list[tuple[str, float]] = []

    @Agent("sleeper")
    class Sleeper:
        @on_assignment
        async def work(self, intent):
            await openintent.sleep(intent.state["seconds"])
            woke.append((intent.title, openintent_now()))
            return {}

    clock = VirtualClock()

    def openintent_now() -> float:
        return clock.now()

    spec = portfolio(*(IntentSpec(name, assign="sleeper", initial_state={"seconds": s})
                       for name, s in [("C", 30), ("A", 10), ("B", 20), ("A2", 10)]))
    await run(spec, Sleeper, clock=clock)
    assert woke == [("A", 10.0), ("A2", 10.0), ("B", 20.0), ("C", 30.0)]


async def test_a_task_waiting_on_real_time_keeps_virtual_time_still():
    clock = VirtualClock()

    @Agent("real")
    class Real:
        @on_assignment
        async def work(self, intent):
            await anyio.sleep(0.05)  # real time: the virtual clock must not jump meanwhile
            return {"virtual_now": clock.now()}

    slow = SimulatedAgent("slow", result={}, delay=1000)
    spec = portfolio(IntentSpec("Real", assign="real"),
                     IntentSpec("Timed", assign="slow", timeout=2000))
    result = await run(spec, Real, slow, clock=clock)
    assert result.intents["Real"].state == {"virtual_now": 0.0}
    assert result.intents["Timed"].status == "completed"


async def test_a_sync_handler_in_a_thread_keeps_virtual_time_still():
    clock = VirtualClock()
    release = threading.Event()

    @Agent("threaded")
    class Threaded:
        @on_assignment
        def work(self, intent):
            release.wait(2)
            return {"virtual_now": clock.now()}

    @Agent("releaser")
    class Releaser:
        @on_assignment
        async def work(self, intent):
            await anyio.sleep(0.02)
            release.set()
            return {}

    guard = SimulatedAgent("guard", hang=True)
    spec = portfolio(IntentSpec("Thread", assign="threaded"),
                     IntentSpec("Release", assign="releaser"),
                     IntentSpec("Guard", assign="guard", timeout=5))
    result = await run(spec, Threaded, Releaser, guard, clock=clock)
    assert result.intents["Thread"].state == {"virtual_now": 0.0}
    assert result.intents["Guard"].error_type == "IntentTimeoutError"


async def test_sleep_outside_a_run_jumps_at_once():
    clock = VirtualClock(start=100)
    started = time.perf_counter()
    await clock.sleep(3600)
    assert clock.now() == 3700.0
    assert time.perf_counter() - started < 5  # not an hour


async def test_openintent_sleep_outside_a_run_is_real_sleep():
    started = time.perf_counter()
    await openintent.sleep(0.01)
    assert time.perf_counter() - started >= 0.009


# ---------------------------------------------------------------------------- determinism


def _review_spec() -> PortfolioSpec:
    return portfolio(
        IntentSpec("Write", assign="writer"),
        IntentSpec("Review", assign="reviewer", depends_on=["Write"],
                   retry={"max_attempts": 3, "initial_delay": 2.0}),
        IntentSpec("Index", assign="indexer", depends_on=["Write"]),
        IntentSpec("Publish", assign="writer", depends_on=["Review", "Index"]),
    )


def _review_agents() -> list[SimulatedAgent]:
    return [
        SimulatedAgent("writer", result={"done": True}, delay=3, cost_usd=0.1),
        SimulatedAgent("reviewer", result={"ok": True}, delay=7, fail_times=1),
        SimulatedAgent("indexer", result={"indexed": 4}, delay=1),
    ]


def _without_ids(result: RunResult) -> list[tuple[object, ...]]:
    ids = {result.portfolio_id, *(item.id for item in result.intents.values())}
    return [tuple("<id>" if isinstance(field, str) and field in ids else field
                  for field in event)
            for event in result.events]


async def test_same_seed_same_events_and_timestamps_under_ids_of_each_run():
    runs = [await run(_review_spec(), *_review_agents(), seed=42) for _ in range(3)]
    logs = [_without_ids(result) for result in runs]
    assert logs[0] == logs[1] == logs[2]
    assert len({result.portfolio_id for result in runs}) == 3  # one id, one run
    jitter = [event.data["delay"] for event in runs[0].events.of_type("retry_scheduled")]
    assert 1.0 <= jitter[0] <= 2.0  # seeded jitter from the upper half of the backoff
    other = await run(_review_spec(), *_review_agents(), seed=43)
    assert _without_ids(other) != logs[0]


# ---------------------------------------------------------------------------- simulated agents


async def test_simulated_agent_records_calls_and_reports_cost():
    agent = SimulatedAgent("worker", result={"n": 1}, delay=2.5, cost_usd=0.2)
    result = await run(portfolio(IntentSpec("A", assign="worker"),
                                 IntentSpec("B", assign="worker", depends_on=["A"])), agent)
    assert agent.titles == ["A", "B"]
    assert [(call.attempt, call.time) for call in agent.calls] == [(1, 0.0), (1, 2.5)]
    assert agent.calls_for("B")[0].intent_id == result.intents["B"].id
    assert result.cost_usd == pytest.approx(0.4)
    assert result.intents["B"].state == {"n": 1}


async def test_simulated_agent_takes_a_callable_or_per_call_outcomes():
    async def answer(intent):
        return {"echo": intent.title}

    scripted = SimulatedAgent("scripted", result=[ValueError("first"), Escalate("second"),
                                                   {"third": True}])
    callable_agent = SimulatedAgent("callable", result=answer)
    result = await run(
        portfolio(IntentSpec("S", assign="scripted", retry={"max_attempts": 3,
                                                              "initial_delay": 0}),
                  IntentSpec("C", assign="callable")),
        scripted, callable_agent,
    )
    assert result.intents["C"].state == {"echo": "C"}
    # The escalation on the second call is not retried: nobody handles it yet.
    assert result.intents["S"].error_type == "EscalationError"
    assert [call.attempt for call in scripted.calls] == [1, 2]


async def test_simulated_agent_fail_times_and_error():
    agent = SimulatedAgent("picky", result={"ok": 1}, fail_times=2, error=KeyError)
    result = await run(portfolio(IntentSpec("A", assign="picky", retry={
        "max_attempts": 2, "initial_delay": 0})), agent)
    assert result.intents["A"].status == "failed"
    assert result.intents["A"].error_type == "KeyError"


async def test_simulated_agent_escalate_and_hang_outcome():
    escalating = SimulatedAgent("escalating", escalate="needs a senior")
    hanging = SimulatedAgent("hanging", result=[HANG, {"second": True}])
    result = await run(
        portfolio(IntentSpec("E", assign="escalating"),
                  IntentSpec("H", assign="hanging", timeout=60,
                             retry={"max_attempts": 2, "initial_delay": 0})),
        escalating, hanging,
    )
    assert "needs a senior" in result.intents["E"].error
    assert result.intents["H"].state == {"second": True}
    assert [call.time for call in hanging.calls] == [0.0, 60.0]


async def test_simulated_agents_register_themselves_for_runtime_lookup(openintent_registry):
    SimulatedAgent("looked-up", result={"found": True})
    async with Runtime(clock=VirtualClock()) as rt:
        result = await rt.run(portfolio(IntentSpec("A", assign="looked-up")))
    assert result.intents["A"].state == {"found": True}


# ---------------------------------------------------------------------------- assertions


async def test_assert_ran_before_and_event_types():
    result = await run(_review_spec(), *_review_agents())
    assert_ran_before(result, "Write", "Review")
    assert_ran_before(result, "Index", "Publish")
    with pytest.raises(AssertionError, match="'Publish' completed at event"):
        assert_ran_before(result, "Publish", "Write")
    assert_event_types(result, ["created", "ready", "dispatched", "completed"], intent="Index")
    with pytest.raises(AssertionError) as caught:
        assert_event_types(result, ["created", "ready", "completed"], intent="Review")
    message = str(caught.value)
    assert "+ attempt_failed" in message and "+ retry_scheduled" in message
    assert event_types(result)[0] == "run_started"


async def test_replay_rebuilds_every_intent_from_the_events():
    result = await run(_review_spec(), *_review_agents())
    assert replay(result) == dict(result.intents)
    assert_replay_matches(result)
    assert replay(result.events)["Review"].attempts == 2


async def test_capture_events_collects_every_run():
    with capture_events() as events:
        first = await run(portfolio(IntentSpec("A", assign="w")), SimulatedAgent("w", {}))
        second = await run(portfolio(IntentSpec("B", assign="w")), SimulatedAgent("w", {}))
    assert events == list(first.events) + list(second.events)


# ---------------------------------------------------------------------------- pytest plugin


async def test_runtime_fixture_uses_a_virtual_clock_and_the_test_registry(runtime, virtual_clock):
    SimulatedAgent("fixture-agent", result={"ok": True}, delay=600)
    result = await runtime.run(portfolio(IntentSpec("A", assign="fixture-agent")))
    assert result.status == "completed"
    assert virtual_clock.now() == 600.0
    assert runtime.clock is virtual_clock


@pytest.mark.openintent(seed=5)
async def test_the_marker_sets_the_seed(runtime):
    SimulatedAgent("seeded", result={}, fail_times=1)
    spec = portfolio(IntentSpec("A", assign="seeded", retry={"max_attempts": 2}))
    first = await runtime.run(spec)
    async with Runtime(seed=5, clock=VirtualClock()) as other:
        again = await other.run(spec)
    # The seed drives the retry jitter.
    first_delay, again_delay = (result.events.of_type("retry_scheduled")[0].data["delay"]
                                for result in (first, again))
    assert first_delay == again_delay


async def test_captured_events_fixture(runtime, captured_events):
    SimulatedAgent("captured", result={})
    result = await runtime.run(portfolio(IntentSpec("A", assign="captured")))
    assert captured_events == list(result.events)


async def test_agents_defined_in_one_test_do_not_leak(openintent_registry):
    assert "fixture-agent" not in openintent_registry
    assert "looked-up" not in openintent_registry


async def test_a_deadlocked_run_is_halted_instead_of_hanging_the_test():
    clock = VirtualClock(deadlock_after=0.1)
    stuck = SimulatedAgent("stuck", hang=True)
    done = SimulatedAgent("done", result={"ok": True}, delay=5)
    started = time.perf_counter()
    result = await run(portfolio(IntentSpec("Stuck", assign="stuck"),
                                 IntentSpec("Done", assign="done")), stuck, done, clock=clock)
    assert time.perf_counter() - started < 10  # halted, not hung
    assert result.status == "halted"
    assert result.breach.guardrail == "virtual_clock"
    assert "deadlock" in result.error and "hangs without a timeout" in result.error
    assert result.titles_by_status() == {"cancelled": ["Stuck"], "completed": ["Done"]}


async def test_deadlock_detection_can_be_turned_off():
    import asyncio

    clock = VirtualClock(deadlock_after=None)
    stuck = SimulatedAgent("stuck", hang=True)
    loop = asyncio.get_running_loop()
    with anyio.CancelScope() as scope:
        # A timer thread, not an event-loop timer: the loop looks idle, as in a real deadlock.
        timer = threading.Timer(0.3, lambda: loop.call_soon_threadsafe(scope.cancel))
        timer.start()
        await run(portfolio(IntentSpec("Stuck", assign="stuck")), stuck, clock=clock)
    timer.join()
    assert scope.cancelled_caught  # still waiting after 0.3 s: nobody declared a deadlock


async def test_captured_decisions_fixture(runtime, captured_decisions):
    from openintent.agents import Coordinator, on_assignment

    @Coordinator("decider")
    class Decider:
        @on_assignment
        async def decide(self, intent):
            await self.record_decision(intent_id=intent.id, decision="chose", rationale="why",
                                       option=1)
            return {}

    result = await runtime.run(portfolio(IntentSpec("A")), coordinator=Decider)
    assert captured_decisions == list(result.decisions)
    assert [d.decision for d in captured_decisions] == ["chose"]
    assert captured_decisions[0].data == {"option": 1}


async def test_guardrail_types_registered_in_a_test_are_forgotten_after_it():
    from openintent import SpecError
    from openintent._guardrail_core import isolated_guardrail_types
    from openintent.guardrails import Guardrail, build_guardrails, register_guardrail

    class Noop(Guardrail):
        type = "noop-for-test"

    with isolated_guardrail_types():
        register_guardrail("noop-for-test", Noop)
        assert isinstance(build_guardrails([{"type": "noop-for-test"}], "here")[0], Noop)
    with pytest.raises(SpecError, match="unknown guardrail type 'noop-for-test'"):
        build_guardrails([{"type": "noop-for-test"}], "here")
    with pytest.raises(SpecError, match="valid fields: max_cost_usd, warn_at"):
        build_guardrails([{"type": "budget", "max_cost": 1}], "here")


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


