"""The journal is the run: for generated portfolios and fault plans (failing intents, retries,
costs, a budget that may halt the run, decisions), the run loaded back from a SQLite journal
by a fresh runtime equals the RunResult the live run returned: statuses, states, versions,
attempts, errors, decisions, costs, output and every event.

Driven with ``asyncio.run`` inside synchronous Hypothesis tests, like
tests/test_scheduler_properties.py.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openintent import Runtime, sleep
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_complete,
)
from openintent.models import RunResult
from openintent.testing import VirtualClock

AGENT_ID = "worker"


@dataclass(frozen=True)
class Plan:
    """A random DAG and what goes wrong in it."""

    deps: tuple[tuple[int, ...], ...]
    fail_times: tuple[int, ...]  # per node: how many attempts fail before one succeeds
    cost: tuple[float, ...]  # per node: what each attempt records
    sleeps: tuple[float, ...]  # per node: virtual seconds each attempt takes
    max_attempts: int
    budget: float | None  # a budget guardrail (it may halt the run)
    coordinated: bool  # a coordinator that records a decision per completion


@st.composite
def plans(draw: st.DrawFn, max_nodes: int = 12) -> Plan:
    n = draw(st.integers(1, max_nodes))
    deps = tuple(
        tuple(sorted(draw(st.sets(st.integers(0, node - 1), max_size=min(node, 3)))))
        if node else ()
        for node in range(n)
    )
    per_node = st.lists(st.integers(0, 3), min_size=n, max_size=n)
    return Plan(
        deps=deps,
        fail_times=tuple(draw(per_node)),
        cost=tuple(draw(st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=n, max_size=n))),
        sleeps=tuple(draw(st.lists(st.sampled_from([0.0, 0.5, 2.0]), min_size=n, max_size=n))),
        max_attempts=draw(st.integers(1, 3)),
        budget=draw(st.none() | st.sampled_from([0.5, 2.0, 5.0])),
        coordinated=draw(st.booleans()),
    )


def title(node: int) -> str:
    return f"n{node:02d}"


def build(plan: Plan) -> tuple[PortfolioSpec, list[Any], Any]:
    failures = dict.fromkeys(range(len(plan.deps)), 0)

    @Agent(AGENT_ID)
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            node = int(intent.title[1:])
            if plan.sleeps[node]:
                await sleep(plan.sleeps[node])  # on the run's (virtual) clock
            else:
                await anyio.lowlevel.checkpoint()
            if plan.cost[node]:
                await self.record_cost(intent, plan.cost[node])
            if failures[node] < plan.fail_times[node]:
                failures[node] += 1
                raise RuntimeError(f"{intent.title} fails (attempt {intent.attempt})")
            total = node + sum(state["total"] for state in intent.inputs.values())
            return {"total": total, "attempt": intent.attempt}

    guardrails = [{"type": "budget", "max_cost_usd": plan.budget}] if plan.budget else []

    @Coordinator("boss", agents=[AGENT_ID], guardrails=guardrails)
    class Boss:
        @on_complete
        async def noted(self, intent: Any) -> None:
            await self.record_decision(intent.id, decision="accepted",
                                       rationale=f"{intent.title} done",
                                       total=intent.state["total"])

        @on_all_complete
        async def done(self, portfolio: Any) -> dict[str, Any]:
            return {"finished": len(portfolio.intents)}

    retry = {"max_attempts": plan.max_attempts, "initial_delay": 1.0, "jitter": False}
    spec = PortfolioSpec(
        name="journaled",
        intents=[
            IntentSpec(title(node), assign=AGENT_ID, retry=retry,
                       depends_on=[title(parent) for parent in parents],
                       constraints={"estimated_cost_usd": plan.cost[node]})
            for node, parents in enumerate(plan.deps)
        ],
    )
    return spec, [Worker(), Boss()], Boss if plan.coordinated else None


_databases = itertools.count()


def live_and_loaded(plan: Plan, directory: Path) -> tuple[RunResult, RunResult]:
    spec, agents, coordinator = build(plan)
    store = f"sqlite:///{directory / f'runs{next(_databases)}.db'}"

    async def main() -> tuple[RunResult, RunResult]:
        with anyio.fail_after(60):
            async with Runtime(agents=agents, store=store, clock=VirtualClock(), seed=3) as rt:
                live = await rt.run(spec, coordinator=coordinator)
            async with Runtime(agents=[], store=store) as fresh:
                loaded = await fresh.load(live.portfolio_id)
        return live, loaded

    return asyncio.run(main())


def check_loaded_equals_live(plan: Plan, directory: Path) -> None:
    live, loaded = live_and_loaded(plan, directory)
    assert loaded.portfolio_id == live.portfolio_id
    assert loaded.name == live.name
    assert loaded.status == live.status
    assert loaded.output == live.output
    assert loaded.error == live.error
    assert loaded.cost_usd == live.cost_usd
    assert list(loaded.intents) == list(live.intents)
    for name, intent in live.intents.items():
        assert loaded.intents[name] == intent, name
    assert loaded.decisions == live.decisions
    assert list(loaded.events) == list(live.events)
    assert [event.at for event in loaded.events] == [event.at for event in live.events]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_a_run_loaded_from_the_journal_equals_the_live_result(plan: Plan) -> None:
    with tempfile.TemporaryDirectory() as directory:
        check_loaded_equals_live(plan, Path(directory))
