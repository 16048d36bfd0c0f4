"""The Hypothesis strategies, used the way users would: property tests over whole runs."""

from __future__ import annotations

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openintent import Runtime, VirtualClock
from openintent.testing import assert_replay_matches, isolated_registry
from openintent.testing.strategies import FaultPlan, fault_plans, portfolios

AGENTS = ["agent-a", "agent-b", "agent-c"]
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(portfolios(agents=AGENTS, max_intents=15, max_width=3))
def test_generated_portfolios_are_valid_dags_in_declaration_order(spec):
    titles = [intent.title for intent in spec.intents]
    assert len(set(titles)) == len(titles)
    for position, intent in enumerate(spec.intents):
        assert set(intent.depends_on) <= set(titles[:position])
        assert intent.assign in AGENTS


@PROPERTY
@given(portfolios(agents=AGENTS, multi_assignee=True, max_intents=10))
def test_multi_assignee_portfolios_assign_distinct_agents(spec):
    for intent in spec.intents:
        assert len(set(intent.assignees)) == len(intent.assignees) >= 1


@PROPERTY
@given(st.data())
def test_fault_plans_act_out_every_fault_and_every_run_ends(data):
    spec = data.draw(portfolios(agents=AGENTS, max_intents=8,
                                retry={"max_attempts": 3, "initial_delay": 1.0}))
    plan: FaultPlan = data.draw(fault_plans(AGENTS, max_calls=3))

    async def main():
        with isolated_registry():
            agents = plan.agents(AGENTS, cost_usd=0.5)
            # Every attempt is bounded, so a hanging agent fails its attempt instead of the run.
            bounded = type(spec)(spec.name, [
                type(intent)(intent.title, assign=intent.assign, depends_on=intent.depends_on,
                             retry=intent.retry, timeout=30)
                for intent in spec.intents
            ])
            async with Runtime(agents=agents, clock=VirtualClock(), seed=0) as rt:
                return await rt.run(bounded), agents

    result, agents = anyio.run(main)
    assert all(item.status.is_terminal for item in result.intents.values())
    assert_replay_matches(result)
    by_id = {agent.agent_id: agent for agent in agents}
    for title, item in result.intents.items():
        if item.status != "completed":
            continue
        calls = by_id[item.assigned_to].calls_for(title)
        faults = plan.for_agent(item.assigned_to)
        # The call that completed the intent is one without a blocking fault.
        assert faults.get(len(calls)) in (None, "overspend")
    overspends = sum(
        1 for event in result.events.of_type("cost_recorded")
        if event.data.get("fault") == "overspend"
    )
    assert result.cost_usd >= 100.0 * overspends
