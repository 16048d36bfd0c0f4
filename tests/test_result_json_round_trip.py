"""A run's result, its events and decisions are JSON data: ``json.loads(json.dumps(d)) == d``
for their ``to_dict()``, as a durable store that journals them would give them back."""

from __future__ import annotations

import json

import pytest

from openintent import Runtime, VirtualClock
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment


@Agent("round-trip-worker")
class Worker:
    @on_assignment
    async def work(self, intent: object) -> dict[str, object]:
        return {"rows": [{"k": [1, {"z": 2}]}, 3], "pair": (1, 2)}


@pytest.mark.asyncio
async def test_the_result_dict_survives_a_json_round_trip_unchanged() -> None:
    spec = PortfolioSpec("p", [
        IntentSpec(title="A", assign="round-trip-worker", constraints={"c": [1]}),
        IntentSpec(title="B", assign=["round-trip-worker"], depends_on=["A"]),
    ])
    async with Runtime(agents=[Worker], clock=VirtualClock(), seed=0) as rt:
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
    async with Runtime(agents=[Worker], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec)
    created = result.events.of_type("created").for_intent(result.intents["B"].id)[0]
    assert created.to_dict()["data"]["depends_on"] == ["A"]
    assert created.to_dict()["data"]["assign"] == ["round-trip-worker"]
    assert created.data["depends_on"] == ["A"]
