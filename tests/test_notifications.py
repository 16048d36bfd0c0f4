"""Lifecycle hooks racing retries, halts and completions: a run always ends, and every hook
fires once per event it listens to.

Runs are on the VirtualClock. A hang is caught by a watchdog *thread* (``anyio.fail_after``
would put a real-time timer in the loop and keep virtual time still); on the virtual clock a
run whose tasks all wait forever is also halted as deadlocked, which the tests reject.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import openintent
from openintent import Runtime
from openintent.agents import (
    Agent,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_complete,
    on_event,
    on_retry,
    on_state_change,
)
from openintent.models import Intent, RunResult
from openintent.testing import VirtualClock, assert_replay_matches

HANG_SECONDS = 20.0  # real time; a run here takes milliseconds, so only a hang gets near it


@contextmanager
def watchdog(seconds: float = HANG_SECONDS) -> Iterator[anyio.CancelScope]:
    """Cancel the block from a thread after ``seconds`` of real time (keeps virtual time free)."""
    loop = asyncio.get_running_loop()
    with anyio.CancelScope() as scope:
        timer = threading.Timer(seconds, lambda: loop.call_soon_threadsafe(scope.cancel))
        timer.start()
        try:
            yield scope
        finally:
            timer.cancel()
    assert not scope.cancelled_caught, f"the run hung for {seconds} s"


# ------------------------------------------------------------------ the reported hang


@Agent("notify-flaky")
class FlakyOnce:
    """Fails each intent's first attempt; its hooks await the clock."""

    def __init__(self, pause: Any = None) -> None:
        self.pause = pause or (lambda: openintent.sleep(0.05))
        self.failed_once: set[str] = set()
        self.retries: list[str] = []
        self.failures_heard: list[str] = []

    @on_assignment
    async def work(self, intent: Intent) -> dict[str, Any]:
        if intent.title not in self.failed_once:
            self.failed_once.add(intent.title)
            raise RuntimeError("the first attempt fails")
        return {"ok": True}

    @on_retry
    async def retrying(self, intent: Intent, attempt: int, error: Exception) -> None:
        self.retries.append(intent.title)

    @on_event("attempt_failed")
    async def heard_failure(self, event: Any) -> None:
        await self.pause()
        self.failures_heard.append(event.intent_id)


def five_failing_once() -> PortfolioSpec:
    return PortfolioSpec(
        name="retry-race",
        intents=[
            IntentSpec(title=f"t{i}", assign="notify-flaky",
                       retry={"max_attempts": 2, "initial_delay": 0})
            for i in range(5)
        ],
    )


@pytest.mark.asyncio
async def test_concurrent_retries_with_awaiting_event_hooks_finish() -> None:
    agent = FlakyOnce()
    async with Runtime(agents=[agent], clock=VirtualClock(), seed=0) as rt:
        with watchdog():
            result = await rt.run(five_failing_once())
    assert result.breach is None, result.error
    assert result.status == "completed"
    assert sorted(agent.retries) == [f"t{i}" for i in range(5)]
    assert len(agent.failures_heard) == 5


@pytest.mark.asyncio
async def test_concurrent_retries_with_hooks_that_only_yield_finish_on_the_real_clock() -> None:
    agent = FlakyOnce(pause=anyio.lowlevel.checkpoint)
    async with Runtime(agents=[agent], seed=0) as rt:
        with anyio.fail_after(HANG_SECONDS):  # a hang detector only: the run takes ms
            result = await rt.run(five_failing_once())
    assert result.status == "completed"
    assert sorted(agent.retries) == [f"t{i}" for i in range(5)]


# ------------------------------------------------------------------ stress


@dataclass(frozen=True)
class Plan:
    failures: tuple[int, ...]  # failing attempts per intent
    attempts: tuple[int, ...]  # max_attempts per intent
    delays: tuple[float, ...]  # virtual seconds of work per attempt
    costs: tuple[float, ...]  # dollars recorded per attempt
    parents: tuple[int | None, ...]  # an earlier intent each one depends on, if any
    hook_pause: float  # virtual seconds every hook awaits
    budget: float | None

    @property
    def size(self) -> int:
        return len(self.failures)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    size = draw(st.integers(1, 6))
    per = lambda strategy: tuple(draw(st.lists(strategy, min_size=size, max_size=size)))  # noqa: E731
    parents = tuple(
        draw(st.one_of(st.none(), st.integers(0, index - 1))) if index else None
        for index in range(size)
    )
    return Plan(
        failures=per(st.integers(0, 2)),
        attempts=per(st.integers(1, 3)),
        delays=per(st.sampled_from([0.0, 0.1, 1.0])),
        costs=per(st.sampled_from([0.0, 1.0, 2.0])),
        parents=parents,
        hook_pause=draw(st.sampled_from([0.0, 0.05, 0.5])),
        budget=draw(st.sampled_from([None, 2.5, 6.0, 100.0])),
    )


@Agent("notify-racer")
class Racer:
    """Works, spends, fails as its plan says; every hook awaits the clock and counts."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.calls: Counter[str] = Counter()

    def _index(self, intent: Intent) -> int:
        return int(intent.title[1:])

    async def _pause(self, what: str) -> None:
        if self.plan.hook_pause:
            await openintent.sleep(self.plan.hook_pause)
        else:
            await anyio.lowlevel.checkpoint()
        self.calls[what] += 1

    @on_assignment
    async def work(self, intent: Intent) -> dict[str, Any]:
        index = self._index(intent)
        if self.plan.delays[index]:
            await openintent.sleep(self.plan.delays[index])
        if self.plan.costs[index]:
            await self.record_cost(intent, self.plan.costs[index])  # type: ignore[attr-defined]
        if intent.attempt <= self.plan.failures[index]:
            raise RuntimeError(f"attempt {intent.attempt} fails")
        return {"done": intent.attempt}

    @on_retry
    async def retrying(self, intent: Intent, attempt: int, error: Exception) -> None:
        await self._pause("retry")

    @on_event("attempt_failed")
    async def attempt_failed(self, event: Any) -> None:
        await self._pause("attempt_failed")

    @on_event("completed")
    async def completed_event(self, event: Any) -> None:
        await self._pause("completed")

    @on_complete
    async def complete(self, intent: Intent) -> None:
        await self._pause("on_complete")

    @on_state_change
    async def state_changed(self, intent: Intent, old: Any, new: Any) -> None:
        await self._pause("state_change")


def spec_of(plan: Plan) -> PortfolioSpec:
    return PortfolioSpec(
        name="hook-race",
        intents=[
            IntentSpec(
                title=f"t{index}",
                assign="notify-racer",
                depends_on=[] if parent is None else [f"t{parent}"],
                retry={"max_attempts": plan.attempts[index], "initial_delay": 0},
            )
            for index, parent in enumerate(plan.parents)
        ],
    )


def check_hooks_fired_once_per_event(result: RunResult, racer: Racer) -> None:
    types = Counter(event.type for event in result.events)
    assert result.events[-1].type == "run_finished"
    if result.breach is not None:
        assert result.breach.guardrail == "budget", result.error  # never a deadlock halt
        assert result.status == "halted"
        # Hooks queued before the halt still fire; none fires twice.
        assert racer.calls["attempt_failed"] <= types["attempt_failed"]
        assert racer.calls["completed"] <= types["completed"]
        assert racer.calls["retry"] <= types["retry_scheduled"]
        return
    statuses = {intent.status for intent in result.intents.values()}
    assert statuses <= {"completed", "failed", "skipped"}
    assert racer.calls["attempt_failed"] == types["attempt_failed"]
    assert racer.calls["completed"] == types["completed"]
    assert racer.calls["on_complete"] == types["completed"]
    assert racer.calls["state_change"] == types["completed"]
    assert racer.calls["retry"] == types["retry_scheduled"]
    assert (result.status == "completed") == (statuses == {"completed"})


async def run_plan(plan: Plan) -> tuple[RunResult, Racer]:
    racer = Racer(plan)
    guardrails = [] if plan.budget is None else [{"type": "budget", "max_cost_usd": plan.budget}]
    async with Runtime(agents=[racer], clock=VirtualClock(), seed=0, guardrails=guardrails) as rt:
        with watchdog():
            result = await rt.run(spec_of(plan))
    return result, racer


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans())
def test_hooks_racing_retries_halts_and_completions_always_finish(plan: Plan) -> None:
    async def main() -> None:
        result, racer = await run_plan(plan)
        check_hooks_fired_once_per_event(result, racer)
        assert_replay_matches(result)

    anyio.run(main, backend="asyncio")


@pytest.mark.asyncio
async def test_a_budget_halt_while_hooks_drain_for_retries_ends_the_run() -> None:
    # Five intents fail at once and retry while awaiting hooks drain; the third cost halts.
    plan = Plan(failures=(1,) * 5, attempts=(2,) * 5, delays=(0.0,) * 5, costs=(1.0,) * 5,
                parents=(None,) * 5, hook_pause=0.5, budget=2.5)
    result, racer = await run_plan(plan)
    check_hooks_fired_once_per_event(result, racer)
    assert result.breach is not None and result.breach.guardrail == "budget"


@pytest.mark.asyncio
async def test_hooks_queued_before_a_halt_still_fire_on_the_virtual_clock() -> None:
    # The third intent's cost breaches the budget while the earlier completions' hooks sleep
    # on the virtual clock: they fire, and the run ends.
    plan = Plan(failures=(0,) * 3, attempts=(1,) * 3, delays=(0.0,) * 3, costs=(0.0, 1.0, 2.0),
                parents=(None,) * 3, hook_pause=0.05, budget=2.5)
    result, racer = await run_plan(plan)
    assert result.breach is not None and result.breach.guardrail == "budget"
    completed = sum(event.type == "completed" for event in result.events)
    assert completed >= 1
    assert racer.calls["completed"] == racer.calls["on_complete"] == completed
