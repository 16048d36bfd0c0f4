"""Budget reservations: the estimates of running attempts are held against the budget.

An attempt whose ``constraints["estimated_cost_usd"]`` does not fit beside the spend and the
reservations of the attempts already running waits (holding no concurrency slot) until one of
them ends; one that can never fit halts the run. Also here: the timeout guardrail's
``observed`` and ``rate_limit``'s ``per_agent`` with several assignees.

Everything runs on a ``VirtualClock``; every run is bounded by a virtual deadline, so a
regression that hangs fails a test instead of hanging it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import RunResult
from openintent.testing import SimulatedAgent, isolated_registry

from _helpers import bounded

BUDGET_5 = {"type": "budget", "max_cost_usd": 5.0}
NO_DELAY = {"initial_delay": 0, "jitter": False}


# ----------------------------------------------------------------------------------- helpers


def make_worker(calls: list[str] | None = None) -> type:
    """An agent that works ``constraints["seconds"]`` and then records ``constraints["usd"]``;
    with ``constraints["fail_first"]`` its first attempt fails (after recording). Each call is
    appended to ``calls`` (its title)."""

    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if calls is not None:
                calls.append(intent.title)
            await openintent.sleep(intent.constraints.get("seconds", 10))
            usd = intent.constraints.get("usd", 0)
            if usd:
                await self.record_cost(intent, usd)  # type: ignore[attr-defined]
            if intent.constraints.get("fail_first") and intent.attempt == 1:
                raise RuntimeError("first attempt fails")
            return {"done": intent.title}

    return Worker


def intent(title: str, estimate: float | None = None, **constraints: Any) -> IntentSpec:
    retry = constraints.pop("retry", None)
    depends_on = constraints.pop("depends_on", ())
    if estimate is not None:
        constraints["estimated_cost_usd"] = estimate
    extra: dict[str, Any] = {} if retry is None else {"retry": retry}
    return IntentSpec(title, assign="worker", constraints=constraints,
                      depends_on=list(depends_on), **extra)


async def run_within_5_usd(agent: Any, spec: PortfolioSpec) -> RunResult:
    """``spec`` run by ``agent`` under a $5 budget on a virtual clock, seed 0."""
    async with Runtime(agents=[agent], clock=VirtualClock(), seed=0,
                       guardrails=[BUDGET_5]) as rt:
        return await bounded(rt, spec)


def dispatches(result: RunResult) -> list[tuple[float, str, int]]:
    """(time, title, attempt) of every dispatch, in log order."""
    titles = {item.id: title for title, item in result.intents.items()}
    return [(event.time, titles[event.intent_id], event.data["attempt"])
            for event in result.events.of_type("dispatched")]


def dispatch_times(result: RunResult) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for at, title, _ in dispatches(result):
        times.setdefault(title, []).append(at)
    return times


ENDS_AN_ATTEMPT = {"completed", "attempt_failed", "cancelled"}


def peak_reserved_at_dispatch(result: RunResult, estimates: dict[str, float]) -> float:
    """The largest spend + reservations seen at any dispatch, replayed from the log alone.

    An attempt holds ``max(0, estimate - what it recorded)`` from its ``dispatched`` event to
    the event that ends it; a dispatch counts the reservation it takes itself.
    """
    titles = {item.id: title for title, item in result.intents.items()}
    spent = 0.0
    running: dict[str, float] = {}  # title -> recorded by the running attempt
    peak = 0.0
    for event in result.events:
        title = titles.get(event.intent_id) if event.intent_id else None
        if event.type == "cost_recorded":
            spent += event.data["usd"]
            if title in running:
                running[title] += event.data["usd"]
        elif event.type == "dispatched" and title is not None:
            running[title] = 0.0
            reserved = sum(max(0.0, estimates.get(name, 0.0) - recorded)
                           for name, recorded in running.items())
            peak = max(peak, spent + reserved)
        elif event.type in ENDS_AN_ATTEMPT and title is not None:
            running.pop(title, None)
    return peak


# ------------------------------------------------------------------------ the repro


@pytest.mark.asyncio
async def test_three_parallel_estimates_of_4_against_5_dispatch_one_and_never_overspend():
    worker = make_worker()
    spec = PortfolioSpec("3 x $4", [intent(name, 4, usd=4) for name in ("A", "B", "C")])
    result = await run_within_5_usd(worker, spec)

    # A runs; B and C wait (no slot, not dispatched). A spends $4: B can never fit.
    assert result.status == "halted"
    assert dispatches(result) == [(0.0, "A", 1)]
    assert result.cost_usd == pytest.approx(4.0)
    assert result.breach is not None and result.breach.guardrail == "budget"
    assert result.breach.intent_id == result.intents["B"].id
    assert result.breach.observed == pytest.approx(8.0)
    assert result.intents["A"].status == "completed"
    assert result.titles_by_status()["pending"] == ["B", "C"]


@pytest.mark.asyncio
async def test_an_estimate_that_fits_once_the_first_reports_less_is_dispatched_then():
    worker = make_worker()
    spec = PortfolioSpec("3 x $4, $0.5 each",
                         [intent(name, 4, usd=0.5) for name in ("A", "B", "C")])
    result = await run_within_5_usd(worker, spec)

    # Exactly one at a time: each waits for the one before to end and release its $4.
    assert result.status == "completed"
    assert dispatches(result) == [(0.0, "A", 1), (10.0, "B", 1), (20.0, "C", 1)]
    assert result.cost_usd == pytest.approx(1.5)
    assert peak_reserved_at_dispatch(result, {"A": 4, "B": 4, "C": 4}) <= 5.0


@pytest.mark.asyncio
async def test_a_reservation_is_the_estimate_less_what_the_attempt_recorded():
    @Agent("worker")
    class EarlyPayer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if intent.title == "A":  # pays $3 of its $4 estimate at once, then works on
                await self.record_cost(intent, 3)  # type: ignore[attr-defined]
            await openintent.sleep(intent.constraints["seconds"])
            return {}

    spec = PortfolioSpec("partial", [
        intent("A", 4, seconds=10),
        intent("Z", seconds=5),
        intent("B", 1, seconds=1, depends_on=["Z"]),
        intent("C", 2, seconds=1, depends_on=["Z"]),
    ])
    result = await run_within_5_usd(EarlyPayer, spec)

    # At t=5: spent 3 + A's remaining reservation 1 + B's 1 == 5 fits (not 3 + 4 + 1);
    # C's 2 more does not: it waits for A to end and release its last dollar.
    assert result.status == "completed"
    assert dispatch_times(result) == {"A": [0.0], "Z": [0.0], "B": [5.0], "C": [10.0]}


@pytest.mark.asyncio
async def test_an_attempt_that_spends_past_its_estimate_reserves_nothing_more():
    @Agent("worker")
    class Overrunner:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if intent.title == "A":  # estimated at $1, pays $2 at once
                await self.record_cost(intent, 2)  # type: ignore[attr-defined]
            await openintent.sleep(intent.constraints["seconds"])
            return {}

    spec = PortfolioSpec("overrun", [
        intent("A", 1, seconds=10),
        intent("Z", seconds=5),
        intent("B", 3, seconds=1, depends_on=["Z"]),
        intent("C", 1, seconds=1, depends_on=["Z"]),
    ])
    result = await run_within_5_usd(Overrunner, spec)

    # 2 spent + max(0, 1 - 2) + 3 == 5: B fits at once; C waits for B to end.
    assert result.status == "completed"
    assert dispatch_times(result) == {"A": [0.0], "Z": [0.0], "B": [5.0], "C": [6.0]}


# ---------------------------------------------------------------------------------- retries


@pytest.mark.asyncio
async def test_a_retry_reserves_its_estimate_and_halts_when_it_cannot_fit():
    worker = SimulatedAgent("worker", result={"ok": True}, cost_usd=2.5, fail_times=1)
    spec = PortfolioSpec("retry", [
        IntentSpec("A", assign="worker", constraints={"estimated_cost_usd": 3.0},
                   retry={"max_attempts": 2, **NO_DELAY}),
    ])
    result = await run_within_5_usd(worker, spec)

    # The first attempt spent $2.5; the retry's $3 estimate would take it to $5.5.
    assert result.status == "halted"
    assert [call.attempt for call in worker.calls] == [1]
    assert result.breach is not None and result.breach.observed == pytest.approx(5.5)
    assert result.cost_usd == pytest.approx(2.5)


@pytest.mark.asyncio
async def test_a_retry_waits_in_line_behind_an_intent_that_waited_before_it():
    worker = make_worker()
    spec = PortfolioSpec("retry waits", [
        intent("A", 3, seconds=1, fail_first=True, retry={"max_attempts": 2, **NO_DELAY}),
        intent("B", 3, seconds=10),
    ])
    result = await run_within_5_usd(worker, spec)

    # B waits for A's first attempt to end; A's retry then waits for B (first come, first in).
    assert result.status == "completed"
    assert dispatches(result) == [(0.0, "A", 1), (1.0, "B", 1), (11.0, "A", 2)]


@pytest.mark.asyncio
async def test_waiting_intents_are_admitted_in_the_order_they_started_waiting():
    worker = make_worker()
    budget = {"type": "budget", "max_cost_usd": 10.0}
    spec = PortfolioSpec("fifo", [
        intent("A", 6, usd=1), intent("B", 6, usd=1), intent("C", 4, usd=1),
    ])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[budget]) as rt:
        result = await bounded(rt, spec)

    # C (6 + 4 <= 10) would fit beside A, but B waits ahead of it: no overtaking.
    assert result.status == "completed"
    assert dispatch_times(result) == {"A": [0.0], "B": [10.0], "C": [20.0]}


# ------------------------------------------------------------------------ halts and cancels


@pytest.mark.asyncio
async def test_a_run_timeout_while_intents_wait_for_the_budget_ends_the_run():
    worker = make_worker()
    spec = PortfolioSpec("timeout", [intent(name, 4, seconds=100) for name in ("A", "B", "C")])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[BUDGET_5, {"type": "timeout", "max_seconds": 5}]) as rt:
        result = await bounded(rt, spec)
        assert rt.clock.now() == pytest.approx(5.0)

    assert result.status == "halted"
    assert result.breach is not None and result.breach.guardrail == "timeout"
    assert dispatches(result) == [(0.0, "A", 1)]
    assert result.intents["A"].status == "cancelled"
    assert sorted(result.titles_by_status()["pending"]) == ["B", "C"]


@pytest.mark.asyncio
async def test_spend_past_the_budget_while_intents_wait_halts_without_dispatching_them():
    @Agent("worker")
    class Spender:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await openintent.sleep(intent.constraints["seconds"])
            await self.record_cost(intent, intent.constraints["usd"])  # type: ignore[attr-defined]
            await openintent.sleep(100)
            return {}

    spec = PortfolioSpec("overspend", [
        intent("A", 4, seconds=3, usd=6), intent("B", 4, seconds=1, usd=0),
    ])
    result = await run_within_5_usd(Spender, spec)

    assert result.status == "halted"
    assert result.breach is not None and result.breach.observed == pytest.approx(6.0)
    assert dispatches(result) == [(0.0, "A", 1)]


@pytest.mark.asyncio
async def test_cancelling_a_run_while_intents_wait_for_the_budget_leaves_nothing_waiting():
    calls: list[str] = []
    worker = make_worker(calls)
    spec = PortfolioSpec("cancel", [intent(name, 4, seconds=100) for name in ("A", "B")])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[BUDGET_5]) as rt:
        with rt.clock.timeout(5) as scope:
            await rt.run(spec)
        assert scope.cancelled_caught
        assert rt.clock.now() == pytest.approx(5.0)
        assert calls == ["A"]  # B waited for A's reservation until the cancellation
        # The same runtime runs again from a clean budget: nothing was left reserved.
        again = PortfolioSpec("again", [intent("A", 4, seconds=1, usd=1),
                                        intent("B", 1, seconds=1)])
        result = await bounded(rt, again)
    assert result.status == "completed"
    assert dispatch_times(result) == {"A": [5.0], "B": [5.0]}


# --------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("cap", ["guardrail", "coordinator"])
@pytest.mark.asyncio
async def test_an_intent_waiting_for_the_budget_holds_no_concurrency_slot(cap):
    worker = make_worker()
    guardrails: list[Any] = [BUDGET_5]
    options: dict[str, Any] = {"strategy": "parallel", "guardrails": guardrails}
    if cap == "guardrail":
        guardrails.append({"type": "max_concurrency", "limit": 2})
    else:
        options["max_concurrency"] = 2
    lead = Coordinator("lead", agents=["worker"], **options)(type("Lead", (), {}))
    spec = PortfolioSpec("slots", [
        intent("A", 4, seconds=10, usd=1),
        intent("B", 4, seconds=10, usd=1),
        intent("C", seconds=1),
    ])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        result = await bounded(rt, spec, lead)

    # B waits for A's reservation without a slot, so C (no estimate) takes the second one.
    assert result.status == "completed"
    assert dispatch_times(result) == {"A": [0.0], "C": [0.0], "B": [10.0]}


@pytest.mark.asyncio
async def test_estimates_and_max_concurrency_together_never_reserve_past_the_budget():
    worker = make_worker()
    estimates = {"A": 4.0, "B": 4.0, "C": 4.0, "D": 1.0, "E": 0.0}
    spec = PortfolioSpec("both", [intent(name, estimate or None, usd=estimate / 2)
                                  for name, estimate in estimates.items()])
    guardrails = [{"type": "max_concurrency", "limit": 3}, {"type": "budget", "max_cost_usd": 9}]
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=guardrails) as rt:
        result = await bounded(rt, spec)

    # A and B reserve 8; C waits (12 > 9), D waits behind C, E (no estimate) takes the third
    # slot. At 10 A and B end having spent 4: C (4 + 4) and D (4 + 4 + 1) fit; then E's slot
    # frees too.
    assert result.status == "completed"
    assert dispatch_times(result) == {"A": [0.0], "B": [0.0], "E": [0.0], "C": [10.0],
                                      "D": [10.0]}
    assert peak_reserved_at_dispatch(result, estimates) <= 9.0


@pytest.mark.asyncio
async def test_an_intent_waiting_for_approval_holds_no_reservation():
    worker = make_worker()
    approval = {"type": "approval", "require_for": ["B"], "timeout_seconds": 20,
                "on_timeout": "approve"}
    spec = PortfolioSpec("approval", [
        intent("A", 4, seconds=10, usd=0.5),
        intent("B", 4, seconds=1, usd=0.5),
        intent("C", 4, seconds=5, usd=0.5),
    ])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[BUDGET_5, approval]) as rt:
        result = await bounded(rt, spec)

    # The reservation is taken at dispatch: B's approval wait (until 20) reserves nothing,
    # C waits only for A's $4, and B fits once approved (1 spent + 4).
    assert result.status == "completed"
    assert dispatch_times(result) == {"A": [0.0], "C": [10.0], "B": [20.0]}


# ------------------------------------------------------------------------------ property


@settings(max_examples=40, deadline=None)
@given(
    budget=st.integers(min_value=1, max_value=12),
    work=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=8),  # estimate, $
            st.integers(min_value=0, max_value=4),  # actual, in quarters of the estimate
            st.integers(min_value=1, max_value=5),  # seconds
            st.booleans(),  # fails its first attempt (after recording)
        ),
        min_size=1, max_size=6,
    ),
    limit=st.none() | st.integers(min_value=1, max_value=3),
)
def test_spend_and_reservations_never_pass_the_budget_at_any_dispatch(budget, work, limit):
    estimates = {f"I{index}": float(item[0]) for index, item in enumerate(work)}
    specs = [
        intent(f"I{index}", estimate or None, usd=estimate * quarters / 4, seconds=seconds,
               fail_first=fails, retry={"max_attempts": 2, **NO_DELAY})
        for index, (estimate, quarters, seconds, fails) in enumerate(work)
    ]
    guardrails: list[Any] = [{"type": "budget", "max_cost_usd": budget}]
    if limit is not None:
        guardrails.append({"type": "max_concurrency", "limit": limit})

    async def main() -> RunResult:
        with isolated_registry():
            worker = make_worker()
            async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                               guardrails=guardrails) as rt:
                return await bounded(rt, PortfolioSpec("fuzz", specs))

    result = anyio.run(main)

    assert peak_reserved_at_dispatch(result, estimates) <= budget + 1e-9
    assert result.cost_usd <= budget + 1e-9  # actual <= estimate: nothing overspends
    if result.status == "halted":
        assert result.breach is not None and result.breach.guardrail == "budget"
        assert result.breach.observed > budget  # halted only by an estimate that cannot fit
    else:
        assert result.status == "completed"
        attempts = Counter(title for _, title, _ in dispatches(result))
        assert all(attempts[title] >= 1 for title in estimates)


def test_reservations_hold_on_trio_with_the_real_clock():
    pytest.importorskip("trio")

    async def main() -> tuple[RunResult, RunResult]:
        with isolated_registry():
            worker = make_worker()
            fits = PortfolioSpec("fits", [intent(name, 4, seconds=0.001, usd=0.5)
                                          for name in ("A", "B", "C")])
            never = PortfolioSpec("never", [intent(name, 4.6, seconds=0.001, usd=0.5)
                                            for name in ("A", "B")])
            async with Runtime(agents=[worker], guardrails=[BUDGET_5]) as rt:
                return await rt.run(fits), await rt.run(never)

    fits, never = anyio.run(main, backend="trio")

    # Only the order of events is checked: each dispatch follows the previous completion.
    assert fits.status == "completed"
    kinds = [event.type for event in fits.events if event.type in ("dispatched", "completed")]
    assert kinds == ["dispatched", "completed"] * 3
    assert never.status == "halted" and [t for _, t, _ in dispatches(never)] == ["A"]
    assert never.breach is not None and never.breach.observed == pytest.approx(5.1)


# ------------------------------------------------------------------ timeout and rate limit


class LateClock(VirtualClock):
    """A virtual clock whose sleeps end a quarter second late, as real timers do under load."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + 0.25)


@pytest.mark.asyncio
async def test_the_run_timeout_reports_the_elapsed_time_as_observed():
    worker = SimulatedAgent("worker", hang=True)
    spec = PortfolioSpec("slow", [IntentSpec("A", assign="worker")])
    async with Runtime(agents=[worker], clock=LateClock(), seed=0,
                       guardrails=[{"type": "timeout", "max_seconds": 5}]) as rt:
        result = await bounded(rt, spec)

    assert result.status == "halted"
    assert result.breach is not None and result.breach.limit == 5.0
    assert result.breach.observed == pytest.approx(5.25)
    [event] = result.events.of_type("guardrail_breach")
    assert event.data["observed"] == pytest.approx(5.25)


@pytest.mark.asyncio
async def test_rate_limit_per_agent_counts_a_multi_agent_dispatch_for_each_assignee():
    a = SimulatedAgent("a", result={"ok": True})
    b = SimulatedAgent("b", result={"ok": True})
    spec = PortfolioSpec("shared", [
        IntentSpec("Both", assign=["a", "b"]),
        IntentSpec("OnlyA", assign="a"),
        IntentSpec("OnlyB", assign="b"),
    ])
    per_agent = {"type": "rate_limit", "per_second": 1, "per_agent": True}
    async with Runtime(agents=[a, b], clock=VirtualClock(), seed=0,
                       guardrails=[per_agent]) as rt:
        result = await bounded(rt, spec)

    # "Both" used a's and b's call for second 0: each single-agent intent waits a second.
    assert result.status == "completed"
    assert dispatch_times(result) == {"Both": [0.0], "OnlyA": [1.0], "OnlyB": [1.0]}
    assert [call.time for call in a.calls] == [0.0, 1.0]
    assert [call.time for call in b.calls] == [0.0, 1.0]
