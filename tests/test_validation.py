"""Validation before anything runs: each error says what is wrong and how to fix it."""

from __future__ import annotations

import pytest

import openintent
from openintent import (
    AgentError,
    DependencyCycleError,
    DuplicateIntentError,
    OpenIntentError,
    Runtime,
    SpecError,
    UnknownAgentError,
    UnknownDependencyError,
)
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment

pytestmark = pytest.mark.asyncio


class Calls:
    count = 0


@Agent("worker")
class Worker:
    @on_assignment
    async def work(self, intent):
        Calls.count += 1
        return {}


async def run(*intents: IntentSpec, **kwargs):
    Calls.count = 0
    async with Runtime(agents=[Worker]) as rt:
        return await rt.run(PortfolioSpec("p", list(intents)), **kwargs)


async def test_duplicate_titles_are_refused():
    with pytest.raises(DuplicateIntentError, match=r"intents\[0\] and intents\[2\].*'A'"):
        await run(IntentSpec("A", assign="worker"), IntentSpec("B", assign="worker"),
                  IntentSpec("A", assign="worker"))
    assert Calls.count == 0


async def test_unknown_dependency_suggests_the_closest_title():
    with pytest.raises(UnknownDependencyError, match="did you mean 'Extract'"):
        await run(IntentSpec("Extract", assign="worker"),
                  IntentSpec("Load", assign="worker", depends_on=["Extrct"]))
    assert Calls.count == 0


async def test_a_cycle_is_shown_as_a_path():
    with pytest.raises(DependencyCycleError) as caught:
        await run(
            IntentSpec("Start", assign="worker"),
            IntentSpec("A", assign="worker", depends_on=["Start", "C"]),
            IntentSpec("B", assign="worker", depends_on=["A"]),
            IntentSpec("C", assign="worker", depends_on=["B"]),
        )
    cycle = caught.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"A", "B", "C"}
    # Each title depends on the next one in the message.
    message = str(caught.value)
    assert " -> ".join(cycle) in message
    pairs = list(zip(cycle, cycle[1:], strict=False))
    depends = {"A": "C", "B": "A", "C": "B"}
    assert all(depends[a] == b for a, b in pairs)
    assert Calls.count == 0


async def test_self_dependency_is_a_cycle():
    with pytest.raises(DependencyCycleError, match="A -> A"):
        await run(IntentSpec("A", assign="worker", depends_on=["A"]))


async def test_unknown_agent_id_suggests_a_close_one():
    with pytest.raises(UnknownAgentError, match="intent 'A'.*'wroker'.*did you mean 'worker'"):
        await run(IntentSpec("A", assign="wroker"))
    assert Calls.count == 0


async def test_unknown_agent_in_the_default_registry_names_what_is_registered(openintent_registry):
    @Agent("known")
    class Known:
        @on_assignment
        async def work(self, intent):
            return {}

    async with Runtime() as rt:
        with pytest.raises(UnknownAgentError, match="registered ids: .*known"):
            await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="unknown")]))


async def test_unknown_fallback_agent_is_refused_before_running():
    with pytest.raises(UnknownAgentError, match="backup"):
        await run(IntentSpec("A", assign="worker", retry={"fallback": ["backup"]}))
    assert Calls.count == 0


async def test_an_agent_without_on_assignment_cannot_take_intents():
    @Agent("idle")
    class Idle:
        pass

    async with Runtime(agents=[Idle]) as rt:
        with pytest.raises(AgentError, match="no @on_assignment handler"):
            await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="idle")]))


async def test_an_unassigned_intent_needs_a_coordinator():
    with pytest.raises(SpecError, match="has no assign and the run has no coordinator"):
        await run(IntentSpec("A"))


async def test_run_takes_only_a_portfolio_spec():
    async with Runtime(agents=[Worker]) as rt:
        with pytest.raises(SpecError, match="takes a PortfolioSpec or a WorkflowSpec, got dict"):
            await rt.run({"name": "p"})  # type: ignore[arg-type]


async def test_an_agent_class_is_not_a_coordinator():
    with pytest.raises(AgentError, match="not a @Coordinator"):
        await run(IntentSpec("A", assign="worker"), coordinator=Worker)


async def test_undecorated_classes_are_refused():
    class Plain:
        pass

    with pytest.raises(AgentError, match="not an agent: decorate its class"):
        Runtime(agents=[Plain])


async def test_duplicate_agent_ids_are_refused():
    with pytest.raises(AgentError, match="share the id 'worker'"):
        Runtime(agents=[Worker, Worker()])


async def test_unknown_guardrail_types_and_bad_fields_are_refused_before_running():
    @Coordinator("guarded", guardrails=[{"type": "budjet", "max_cost_usd": 1}])
    class Guarded:
        pass

    with pytest.raises(SpecError, match=r"guardrails\[0\]: unknown guardrail type 'budjet'"):
        await run(IntentSpec("A", assign="worker"), coordinator=Guarded)
    assert Calls.count == 0
    with pytest.raises(SpecError, match=r"Runtime\(...\) guardrails\[0\] \(budget\)"):
        Runtime(guardrails=[{"type": "budget", "max_cost": 1}])
    with pytest.raises(SpecError, match="max_seconds must be a number > 0"):
        Runtime(guardrails=[{"type": "timeout", "max_seconds": -1}])
    with pytest.raises(SpecError, match="a guardrail is a dict"):
        Runtime(guardrails=["budget"])


async def test_an_unknown_store_is_refused():
    with pytest.raises(OpenIntentError, match="memory://"):
        Runtime(store="redis://localhost/0")


async def test_a_refused_spec_logs_nothing_so_event_streams_see_only_real_runs():
    import anyio

    streamed = []
    async with Runtime(agents=[Worker]) as rt:
        stream = rt.events()
        with pytest.raises(UnknownAgentError):
            await rt.run(PortfolioSpec("bad", [IntentSpec("A", assign="nobody")]))
        with pytest.raises(UnknownAgentError, match="intent 'A'.*ghost"):
            await rt.run(PortfolioSpec("bad", [IntentSpec("A", assign="worker",
                                                          retry={"fallback": ["ghost"]})]))

        async def consume() -> None:
            async for event in stream:
                streamed.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            result = await rt.run(PortfolioSpec("good", [IntentSpec("A", assign="worker")]))
    assert streamed == list(result.events)
    assert streamed[0].data["name"] == "good"


async def test_runtime_rejects_a_clock_without_the_clock_methods() -> None:
    import time

    with pytest.raises(openintent.OpenIntentError, match="now"):
        Runtime(clock=time.monotonic)  # type: ignore[arg-type]
