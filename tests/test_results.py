"""Run results as a new user reads them: JSON data, plain dict state, errors that say why and
name the titles."""

from __future__ import annotations

import json
from typing import Any

import pytest

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.testing import SimulatedAgent

from _helpers import Echo, Lead, portfolio, run


@Agent("summarizer")
class Summarizer:
    @on_assignment
    async def summarize(self, intent: Any) -> dict[str, Any]:
        # Passing an upstream result along is an everyday pattern.
        return {"source": intent.inputs["Extract"], "n": len(intent.inputs["Extract"]["rows"])}


@pytest.mark.asyncio
async def test_to_dict_is_json_serialisable_when_a_handler_passes_inputs_along(
    runtime: Runtime,
) -> None:
    SimulatedAgent("extractor", result={"rows": [1, 2, 3]})
    spec = PortfolioSpec(
        "p",
        [
            IntentSpec("Extract", assign="extractor"),
            IntentSpec("Summarize", assign="summarizer", depends_on=["Extract"]),
        ],
    )
    result = await runtime.run(spec)
    assert result.status == "completed"
    json.dumps(result.to_dict())


@pytest.mark.asyncio
async def test_intent_state_in_the_result_is_a_dict(runtime: Runtime) -> None:
    SimulatedAgent("extractor", result={"rows": [1, 2, 3]})
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("Extract", assign="extractor")]))
    state = result.intents["Extract"].state
    assert json.loads(json.dumps(state)) == {"rows": [1, 2, 3]}
    assert isinstance(state, dict)


@pytest.mark.asyncio
async def test_raise_for_status_message_says_why_the_intent_failed(runtime: Runtime) -> None:
    SimulatedAgent("flaky", fail_times=1, error=ValueError("disk full"))
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("B", assign="flaky")]))
    assert result.status == "failed"
    with pytest.raises(openintent.RunFailedError, match="disk full"):
        result.raise_for_status()


@pytest.mark.asyncio
async def test_unknown_title_lookup_names_the_titles(runtime: Runtime) -> None:
    SimulatedAgent("extractor", result={"rows": []})
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("Extract", assign="extractor")]))
    with pytest.raises(KeyError) as info:
        result.intents["extract"]
    assert "Extract" in str(info.value)


@pytest.mark.asyncio
async def test_result_is_json_serialisable():
    result = await run(portfolio(IntentSpec("A", assign="echo")), Echo(),
                       coordinator=Lead)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "completed"
    assert data["output"] == {"done": ["A"]}
    assert data["intents"]["A"]["state"] == {"title": "A", "saw": []}
    assert [event["type"] for event in data["events"]][0] == "run_started"


@pytest.mark.asyncio
async def test_costs_add_up_per_intent_and_per_run():
    @Agent("spender")
    class Spender:
        @on_assignment
        async def work(self, intent):
            await self.record_cost(intent, 0.25, model="small")
            await self.record_cost(intent, 0.5)
            with pytest.raises(ValueError, match="finite amount"):
                await self.record_cost(intent, -1)
            return {}

    result = await run(portfolio(IntentSpec("A", assign="spender"),
                                 IntentSpec("B", assign="spender")), Spender)
    assert result.cost_usd == 1.5
    assert result.intents["A"].cost_usd == 0.75
    (first, *_) = result.events.of_type("cost_recorded")
    assert first.data == {"usd": 0.25, "agent": "spender", "model": "small"}


# ------------------------------------------------------------ result json round trip
# A run's result, its events and decisions are JSON data: ``json.loads(json.dumps(d)) == d``
# for their ``to_dict()``, as a durable store that journals them would give them back.


@Agent("round-trip-worker")
class RoundTripWorker:
    @on_assignment
    async def work(self, intent: object) -> dict[str, object]:
        return {"rows": [{"k": [1, {"z": 2}]}, 3], "pair": (1, 2)}


@pytest.mark.asyncio
async def test_the_result_dict_survives_a_json_round_trip_unchanged() -> None:
    spec = PortfolioSpec("p", [
        IntentSpec(title="A", assign="round-trip-worker", constraints={"c": [1]}),
        IntentSpec(title="B", assign=["round-trip-worker"], depends_on=["A"]),
    ])
    async with Runtime(agents=[RoundTripWorker], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec)
    assert result.status == "completed"
    as_dict = result.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict


@pytest.mark.asyncio
async def test_created_events_list_their_dependencies_and_assignees_as_lists() -> None:
    spec = PortfolioSpec("p", [
        IntentSpec(title="A", assign="round-trip-worker"),
        IntentSpec(title="B", assign=["round-trip-worker"], depends_on=["A"]),
    ])
    async with Runtime(agents=[RoundTripWorker], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec)
    created = result.events.of_type("created").for_intent(result.intents["B"].id)[0]
    assert created.to_dict()["data"]["depends_on"] == ["A"]
    assert created.to_dict()["data"]["assign"] == ["round-trip-worker"]
    assert created.data["depends_on"] == ["A"]
