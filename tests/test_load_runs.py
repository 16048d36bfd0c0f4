"""Reading runs back: ``rt.runs()`` lists a store's runs, ``await rt.load(id)`` rebuilds one
as the ``RunResult`` the live run returned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openintent import RunNotFoundError, Runtime, VirtualClock
from openintent._stores.memory import MemoryBackend
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_escalation,
)
from openintent.models import RunResult
from openintent.testing import SimulatedAgent, isolated_registry
from openintent.testing.strategies import FaultPlan, fault_plans, portfolios
from openintent.workflow import WorkflowSpec

from _helpers import NO_DELAY, portfolio

AGENTS = ["ag-a", "ag-b", "ag-c"]

SEED = Path(__file__).resolve().parent.parent / "examples" / "reviewed_content.yaml"


def assert_loads_as_live(loaded: RunResult, live: RunResult) -> None:
    """Everything the live result says, the loaded one says the same."""
    assert loaded.to_dict() == live.to_dict()
    assert list(loaded.events) == list(live.events)  # seq, type, time, at, intent, data
    assert dict(loaded.intents) == dict(live.intents)
    assert loaded.decisions == live.decisions
    assert (loaded.status, loaded.output, loaded.error, loaded.breach, loaded.cost_usd) == (
        live.status, live.output, live.error, live.breach, live.cost_usd)
    assert loaded.cost_by_agent == live.cost_by_agent


async def run_and_load(spec: Any, *agents: Any, coordinator: Any = None,
                       clock: Any = None, **runtime: Any) -> tuple[RunResult, RunResult]:
    async with Runtime(agents=list(agents), clock=clock or VirtualClock(), seed=0,
                       **runtime) as rt:
        live = await rt.run(spec, coordinator=coordinator)
        loaded = await rt.load(live.portfolio_id)
    return live, loaded


@pytest.mark.asyncio
async def test_a_completed_run_with_decisions_and_escalations_loads_as_it_ran() -> None:
    junior = SimulatedAgent("junior", escalate="too hard", register=False)
    senior = SimulatedAgent("senior", result={"by": "senior"}, delay=7, cost_usd=0.25,
                            register=False)

    @Coordinator("lead", agents=["junior"])
    class Lead:
        @on_escalation
        async def escalated(self, intent: Any, reason: str) -> None:
            await self.record_decision(intent.id, decision="delegate",
                                       rationale="junior escalated", to="senior")
            await self.delegate(intent, to="senior")

        @on_all_complete
        async def done(self, portfolio: Any) -> dict[str, Any]:
            return {"done": sorted(portfolio.intents)}

    spec = portfolio(IntentSpec("X", assign="junior"),
                     IntentSpec("Y", assign="senior", depends_on=["X"],
                                initial_state={"n": 1}))
    live, loaded = await run_and_load(spec, junior, senior, coordinator=Lead)
    assert live.status == "completed" and live.output == {"done": ["X", "Y"]}
    assert live.decisions and live.events.of_type("escalated")
    assert_loads_as_live(loaded, live)
    assert not loaded._errors  # a loaded run has no exceptions


@pytest.mark.asyncio
async def test_a_failed_run_with_retries_and_skipped_dependents_loads_as_it_ran() -> None:
    flaky = SimulatedAgent("flaky", fail_times=5, delay=1, register=False)
    fine = SimulatedAgent("fine", result={"ok": True}, register=False)
    spec = portfolio(
        IntentSpec("A", assign="flaky", retry={"max_attempts": 3, **NO_DELAY}),
        IntentSpec("B", assign="fine", depends_on=["A"]),
        IntentSpec("C", assign="fine"),
    )
    live, loaded = await run_and_load(spec, flaky, fine)
    assert live.status == "failed"
    assert live.intents["A"].attempts == 3 and live.intents["B"].status == "skipped"
    assert_loads_as_live(loaded, live)
    with pytest.raises(Exception, match="'A' failed"):
        loaded.raise_for_status()


@pytest.mark.asyncio
async def test_a_run_halted_by_its_budget_loads_with_its_breach() -> None:
    spender = SimulatedAgent("spender", cost_usd=3.0, delay=1, register=False)
    spec = portfolio(*[IntentSpec(f"I{n}", assign="spender") for n in range(4)])
    live, loaded = await run_and_load(spec, spender,
                                      guardrails=[{"type": "budget", "max_cost_usd": 5}])
    assert live.status == "halted" and live.breach is not None and live.error
    assert_loads_as_live(loaded, live)


@pytest.mark.asyncio
async def test_a_cancelled_run_loads_cancelled() -> None:
    slow = SimulatedAgent("slow", delay=100, register=False)
    async with Runtime(agents=[slow], clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(portfolio(IntentSpec("A", assign="slow"),
                                          IntentSpec("B", assign="slow", depends_on=["A"])))
        await rt.clock.sleep(10)
        await handle.cancel()
        live = await handle.result()
        loaded = await rt.load(handle.portfolio_id)
    assert live.status == "cancelled"
    assert_loads_as_live(loaded, live)


@pytest.mark.asyncio
async def test_a_run_with_a_denied_approval_loads_as_it_ran() -> None:
    worker = SimulatedAgent("w", register=False)
    spec = portfolio(IntentSpec("Deploy", assign="w"),
                     IntentSpec("Notify", assign="w", depends_on=["Deploy"]))
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "approval", "require_for": ["deploy"]}]) as rt:
        handle = await rt.start(spec)
        await rt.clock.sleep(1)
        assert [request.title for request in rt.pending_approvals()] == ["Deploy"]
        await rt.deny("Deploy", by="bob", note="freeze")
        live = await handle.result()
        loaded = await rt.load(live.portfolio_id)
    assert live.intents["Deploy"].error and live.intents["Notify"].status == "skipped"
    assert_loads_as_live(loaded, live)


@pytest.mark.asyncio
async def test_a_yaml_workflow_run_loads_as_it_ran() -> None:
    agents = [SimulatedAgent("writer", result={"draft": "..."}, cost_usd=1.5, register=False),
              SimulatedAgent("reviewer-a", result={"approved": True}, register=False),
              SimulatedAgent("reviewer-b", result={"approved": True}, register=False),
              SimulatedAgent("editor", result={"final": True}, register=False)]
    live, loaded = await run_and_load(WorkflowSpec.from_string(SEED.read_text(), "wf.yaml"),
                                      *agents)
    assert live.status == "completed"
    assert_loads_as_live(loaded, live)


@pytest.mark.asyncio
async def test_a_run_on_the_real_clock_loads_with_the_same_times() -> None:
    worker = SimulatedAgent("w", result={"x": 1}, register=False)
    spec = portfolio(IntentSpec("A", assign="w"), IntentSpec("B", assign="w",
                                                             depends_on=["A"]))
    async with Runtime(agents=[worker], seed=0) as rt:  # no waiting: the clock only dates
        live = await rt.run(spec)
        loaded = await rt.load(live.portfolio_id)
    assert [event.at for event in loaded.events] == [event.at for event in live.events]
    assert_loads_as_live(loaded, live)


@pytest.mark.asyncio
async def test_a_run_still_going_on_loads_as_running_with_what_it_has_so_far() -> None:
    quick = SimulatedAgent("quick", result={"q": 1}, register=False)
    slow = SimulatedAgent("slow", delay=100, register=False)
    async with Runtime(agents=[quick, slow], clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(portfolio(IntentSpec("Q", assign="quick"),
                                          IntentSpec("S", assign="slow", depends_on=["Q"])))
        await rt.clock.sleep(50)
        loaded = await rt.load(handle.portfolio_id)
        assert [info.status for info in rt.runs()] == ["running"]
        live = await handle.result()
    assert loaded.status == "running" and loaded.output is None
    assert loaded.intents["Q"].status == "completed" and loaded.intents["Q"].state == {"q": 1}
    assert loaded.intents["S"].status == "running"
    assert list(loaded.events) == list(live.events)[:len(loaded.events)]
    assert live.status == "completed" and len(live.events) > len(loaded.events)


@pytest.mark.asyncio
async def test_runs_lists_the_top_level_runs_of_the_store_oldest_first() -> None:
    worker = SimulatedAgent("w", register=False)
    child = PortfolioSpec("child", [IntentSpec("C1", assign="w")])

    @Agent("parent-worker")
    class ParentWorker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {}

    @Coordinator("nester")
    class Nester:
        @on_all_complete
        async def done(self, portfolio: Any) -> dict[str, Any]:
            sub = await self.execute(child)
            return {"sub": sub.portfolio_id}

    async with Runtime(agents=[worker, ParentWorker], clock=VirtualClock(), seed=0) as rt:
        assert rt.runs() == []
        first = await rt.run(portfolio(IntentSpec("A", assign="w"), name="first"))
        second = await rt.run(portfolio(IntentSpec("B", assign="parent-worker"),
                                        name="second"), coordinator=Nester)
        listed = rt.runs()
        sub = await rt.load(second.output["sub"])  # a sub-portfolio loads by id
    assert [(info.portfolio_id, info.name, info.status) for info in listed] == [
        (first.portfolio_id, "first", "completed"), (second.portfolio_id, "second", "completed")]
    assert listed[0].started_at == first.events[0].at
    assert listed[0].ended_at == first.events[-1].at
    assert sub.name == "child" and sub.status == "completed" and list(sub.intents) == ["C1"]


@pytest.mark.asyncio
async def test_a_run_output_that_is_not_json_data_loads_as_none() -> None:
    worker = SimulatedAgent("w", register=False)

    @Coordinator("odd")
    class Odd:
        @on_all_complete
        async def done(self, portfolio: Any) -> object:
            return {1, 2}  # a set: the live result has it, the log cannot

    live, loaded = await run_and_load(portfolio(IntentSpec("A", assign="w")), worker,
                                      coordinator=Odd)
    assert live.output == {1, 2} and loaded.output is None
    assert "output" not in live.events[-1].data
    assert loaded.intents == live.intents and list(loaded.events) == list(live.events)


@pytest.mark.asyncio
async def test_loading_an_unknown_run_is_a_run_not_found_error_saying_what_to_do() -> None:
    async with Runtime(agents=[], clock=VirtualClock()) as rt:
        with pytest.raises(RunNotFoundError, match=r"memory:// holds no run 'pf_nope'.*rt\.runs"):
            await rt.load("pf_nope")
        with pytest.raises(KeyError):
            await rt.load("pf_nope")


@pytest.mark.asyncio
async def test_a_resumed_log_dates_each_sitting_by_its_own_time_base_and_ends_at_its_end() -> None:
    # A log written in two sittings: halted, then resumed in a process whose clock started
    # an hour later, and finished.
    backend = MemoryBackend()
    log = backend.create_run("pf_0123456789abcdef", "p", timebase=1_767_225_600.0)
    log.extend([
        ("run_started", 0.0, None, {"name": "p", "intents": 0, "coordinator": None}),
        ("guardrail_breach", 2.0, None, {"guardrail": "budget", "reason": "spent",
                                         "limit": 1, "observed": 2, "intent_id": None}),
        ("run_finished", 2.0, None, {"status": "halted", "error": "halted"}),
        ("run_resumed", 0.5, None, {"from": "halted", "reopened": [],
                                    "timebase": 1_767_229_200.0}),
    ])
    runtime = Runtime(agents=[], clock=VirtualClock())
    runtime._runs.backend = backend  # the runtime's own store, as a resume leaves it
    resumed = await runtime.load("pf_0123456789abcdef")
    assert resumed.status == "running" and resumed.breach is None and resumed.error is None
    assert [event.at.isoformat() for event in resumed.events] == [
        "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:02+00:00",
        "2026-01-01T00:00:02+00:00", "2026-01-01T01:00:00.500000+00:00"]
    log.append(("run_finished", 4.0, None, {"status": "completed", "output": {"ok": True}}))
    finished = await runtime.load("pf_0123456789abcdef")
    assert (finished.status, finished.output) == ("completed", {"ok": True})
    assert finished.events[-1].at.isoformat() == "2026-01-01T01:00:04+00:00"


@settings(max_examples=40, deadline=None)
@given(spec=st.one_of(
    portfolios(agents=AGENTS, multi_assignee=True, retry={"max_attempts": 2}, timeout=60),
    portfolios(agents=AGENTS, retry={"max_attempts": 2, "fallback": ["ag-c"]}, timeout=60)),
       plan=fault_plans(AGENTS))
def test_every_generated_run_loads_as_it_ran(spec: PortfolioSpec, plan: FaultPlan) -> None:
    async def main() -> tuple[RunResult, RunResult]:
        with isolated_registry():
            agents = plan.agents(AGENTS, delay=5, cost_usd=0.5)
            clock = VirtualClock()
            with clock.timeout(1e6):  # a regression that hangs fails instead
                return await run_and_load(
                    spec, *agents, clock=clock,
                    guardrails=[{"type": "budget", "max_cost_usd": 50, "warn_at": 0.5}])

    live, loaded = anyio.run(main)
    assert_loads_as_live(loaded, live)
